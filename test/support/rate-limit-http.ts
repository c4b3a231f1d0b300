import { Controller, Get, UseGuards, type ExecutionContext, type Type } from '@nestjs/common';
import { randomBytes, randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import { RateLimitGuard, RateLimitService, Throttle, type RateLimitOptions } from '../../lib/index.js';
import { recordingLogger } from './recording-logger.js';
import { createToolkitApp, type Platform, type ToolkitApp, type ToolkitAppOptions } from './toolkit-app.js';

/** A rate-limit key from the request's `X-User-Id` header (each test's own user). */
export const userFromHeader = (ctx: ExecutionContext): string =>
  String(ctx.switchToHttp().getRequest<{ headers: Record<string, string> }>().headers['x-user-id']);

/** GET /ping, 'pong', guarded by RateLimitGuard: one request a minute per tracker, the second refused. */
@Controller()
@UseGuards(RateLimitGuard)
export class PingController {
  @Get('ping')
  @Throttle({ limit: 1, ttl: 60_000 })
  ping(): string {
    return 'pong';
  }
}

/**
 * The JSON body of a GraphQL reply (Apollo, Mercurius): each field's value (null when it failed) and an error per failed
 * field (Apollo puts the HTTP status and body of a Nest exception in its `extensions`; Mercurius sends none).
 */
export interface GraphqlReply {
  data?: Record<string, string | null> | null;
  errors?: { message: string; extensions?: Record<string, unknown> }[];
}

/** A header mode of a test (`headers` and what the test reads of it) booted as an app, with or without block cache. */
export type HeaderApp<M> = M & { app: ToolkitApp; http: Server; cache: boolean; label: string };

/**
 * One HTTP app per header mode, each with `rateLimit.blockCache` off and on, on `platform` and `target`, serving
 * `controller`; each its own key prefix.
 */
export function bootHeaderApps<M extends { headers: NonNullable<RateLimitOptions['headers']> }>(
  platform: Platform,
  target: 'single' | 'cluster',
  controller: Type<unknown>,
  modes: readonly M[],
): Promise<HeaderApp<M>[]> {
  return Promise.all(
    modes.flatMap((mode) =>
      [false, true].map(async (cache): Promise<HeaderApp<M>> => {
        const app = await createToolkitApp({
          target,
          platform,
          http: true,
          keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
          rateLimit: { headers: mode.headers, blockCache: cache },
          controllers: [controller],
        });
        const label = `${mode.headers}${cache ? ' +blockCache' : ''}`;
        return { ...mode, app, http: app.app.getHttpServer() as Server, cache, label };
      }),
    ),
  );
}

/**
 * An HTTP app of a guard spec on `platform`, its log recorded, under a key prefix of its own (`rtk-<tag><8 hex>:`);
 * `options` adds the spec's rate-limit options, controllers and providers.
 */
export async function bootLoggedHttpApp(platform: Platform, tag: string, options: ToolkitAppOptions = {}) {
  const log = recordingLogger();
  const app = await createToolkitApp({
    platform,
    http: true,
    logger: log.logger,
    keyPrefix: `rtk-${tag}${randomBytes(4).toString('hex')}:`,
    ...options,
  });
  const http = app.app.getHttpServer() as Server;
  return { app, log, http, port: (http.address() as { port: number }).port, rl: app.get(RateLimitService) };
}
