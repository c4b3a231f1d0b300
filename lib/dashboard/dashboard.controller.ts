import {
  type CanActivate,
  Controller,
  Get,
  Header,
  type MessageEvent,
  Req,
  ServiceUnavailableException,
  Sse,
  type Type,
  UseGuards,
} from '@nestjs/common';
import { Observable } from 'rxjs';
import type { DashboardSnapshot } from './dashboard.aggregator.js';
import { DashboardHostGuard } from './dashboard.host-guard.js';
import { DASHBOARD_PAGE } from './dashboard.page.generated.js';
import { DashboardService } from './dashboard.service.js';

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
  // The page links its script relative to its own URL, and the script finds the stream beside itself: the routes are
  // served under `path` plus whatever the app or a proxy puts before it (setGlobalPrefix, RouterModule, a proxy that
  // strips a path), which an absolute `/_toolkit/...` would miss. `toolkit/dashboard.js` from `/api/ops/toolkit`, and
  // `dashboard.js` from `/api/ops/toolkit/` (Express serves the page there too).
  // The page and its script are lib/dashboard/page/'s files, built into dashboard.page.generated.ts by
  // scripts/embed-assets.mjs: nothing is read from disk (a bundled app has no package directory).
  const page = DASHBOARD_PAGE['dashboard.html'];
  const html = page.replace('%SCRIPT%', `${path.slice(path.lastIndexOf('/') + 1)}/dashboard.js`);
  const htmlAtSlash = page.replace('%SCRIPT%', 'dashboard.js');
  const script = DASHBOARD_PAGE['dashboard.js'];

  @Controller(path)
  class RedisToolkitDashboardController {
    constructor(readonly dashboard: DashboardService) {}

    @Get()
    @Header('content-type', 'text/html; charset=utf-8')
    @Header('content-security-policy', CSP)
    @Header('x-content-type-options', 'nosniff')
    @Header('cache-control', 'no-store')
    page(@Req() req: { originalUrl?: string; url?: string }): string {
      // Only whether the URL ends with a slash is read from the request: nothing of it is written into the page.
      const url = (req.originalUrl ?? req.url ?? '').split('?')[0];
      return url.endsWith('/') ? htmlAtSlash : html;
    }

    @Get('dashboard.js')
    @Header('content-type', 'text/javascript; charset=utf-8')
    @Header('x-content-type-options', 'nosniff')
    @Header('cache-control', 'no-store')
    script(): string {
      return script;
    }

    @Get('snapshot')
    // names an app may take from requests (tags, policies) are in it: never read as another type than JSON
    @Header('x-content-type-options', 'nosniff')
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
  // The Host check first: a request for a foreign name is refused before the app's guard spends anything on it. It
  // reads the resolved options, so whether it is on is decided with the other options at bootstrap.
  UseGuards(...(guard ? [DashboardHostGuard, guard] : [DashboardHostGuard]))(RedisToolkitDashboardController);
  return RedisToolkitDashboardController;
}
