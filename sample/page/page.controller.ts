import { Controller, Get, Header } from '@nestjs/common';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// sample/public/index.html, seen from sample/page (tests run the sources) or from dist*/sample/page (the build)
const PAGE = ['../public/index.html', '../../../sample/public/index.html']
  .map((p) => fileURLToPath(new URL(p, import.meta.url)))
  .find((p) => existsSync(p));

/**
 * The notifications page at `/`, read once at start. A controller rather than `useStaticAssets`: static middleware
 * runs before routing and stats the file system on every API request (9 % of the app's CPU under load in the HTTP
 * benchmark), for one page.
 */
@Controller()
export class PageController {
  private readonly html = PAGE
    ? readFileSync(PAGE, 'utf8')
    : '<!doctype html><p>sample/public/index.html is missing</p>';

  @Get()
  @Header('content-type', 'text/html; charset=utf-8')
  page(): string {
    return this.html;
  }
}
