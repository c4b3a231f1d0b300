import { readFileSync } from 'node:fs';
import {
  type CanActivate,
  Controller,
  Get,
  Header,
  type MessageEvent,
  ServiceUnavailableException,
  Sse,
  type Type,
  UseGuards,
} from '@nestjs/common';
import { Observable } from 'rxjs';
import type { DashboardSnapshot } from './dashboard.aggregator.js';
import { DashboardService } from './dashboard.service.js';

/** The page and its script, beside this file in lib/ (tests) and in dist/lib/ (copied by scripts/copy-lua.mjs). */
function asset(name: string): string {
  return readFileSync(new URL(`./page/${name}`, import.meta.url), 'utf8');
}

/** Nothing but our own script and the stream; the page cannot be framed (clickjacking) or sniffed as another type. */
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; " +
  "frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/** Each event the stream may hold unsent for a slow page (about 200 frames): then the page is disconnected. */
const MAX_PENDING_CHARS = 256 * 1024;

/**
 * The dashboard's routes under `path`: the page, its script, the event stream (`<path>/events`) and a JSON snapshot
 * (`<path>/snapshot`). A class per registration, since the path and the guard are decorator arguments.
 */
export function dashboardController(path: string, guard: Type<CanActivate> | CanActivate | undefined): Type<unknown> {
  const html = asset('dashboard.html').replaceAll('%BASE%', path);
  const script = asset('dashboard.js');

  @Controller(path)
  class RedisToolkitDashboardController {
    constructor(readonly dashboard: DashboardService) {}

    @Get()
    @Header('content-type', 'text/html; charset=utf-8')
    @Header('content-security-policy', CSP)
    @Header('x-content-type-options', 'nosniff')
    @Header('cache-control', 'no-store')
    page(): string {
      return html;
    }

    @Get('dashboard.js')
    @Header('content-type', 'text/javascript; charset=utf-8')
    @Header('x-content-type-options', 'nosniff')
    @Header('cache-control', 'no-store')
    script(): string {
      return script;
    }

    @Get('snapshot')
    @Header('cache-control', 'no-store')
    snapshot(): DashboardSnapshot {
      return this.dashboard.snapshot();
    }

    /** First the snapshot (history of every instance and of the sum), then each frame and sum as they come. */
    @Sse('events', { maxPendingDataLength: MAX_PENDING_CHARS })
    events(): Observable<MessageEvent> {
      return new Observable<MessageEvent>((subscriber) => {
        const stop = this.dashboard.watch(
          (event) => subscriber.next(event),
          () => subscriber.complete(),
        );
        if (!stop) {
          subscriber.error(new ServiceUnavailableException('too many dashboard pages are open on this instance'));
          return undefined;
        }
        subscriber.next({ type: 'snapshot', data: this.dashboard.snapshot() });
        return stop;
      });
    }
  }
  if (guard) UseGuards(guard)(RedisToolkitDashboardController);
  return RedisToolkitDashboardController;
}
