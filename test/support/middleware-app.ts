/**
 * An app of a middleware-stack spec's own: RedisToolkitModule on the shared single Redis under a fresh key prefix, a
 * NestModule applying the test's middleware, the platform's middleware or plugins registered before init (app.use on
 * Express, app.register on Fastify, as the platforms' docs say), listening on a free port. Close with
 * closeMiddlewareApps() in an afterEach.
 */
import { randomUUID } from 'node:crypto';
import {
  type INestApplication,
  type LoggerService,
  type MiddlewareConsumer,
  Module,
  type NestModule,
  type Type,
} from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { RedisToolkitModule, type RedisToolkitOptions } from '../../lib/index.js';
import { sharedServers } from './shared-servers.js';
import type { Platform } from './toolkit-app.js';

export interface MiddlewareAppOptions {
  platform: Platform;
  toolkit?: Omit<Partial<RedisToolkitOptions>, 'connection'>;
  controllers?: Type<unknown>[];
  providers?: unknown[];
  imports?: unknown[];
  /** Applied through a NestModule's configure (SessionMiddleware, express-session as Nest middleware, …). */
  configure?: (consumer: MiddlewareConsumer) => void;
  /** Options of the FastifyAdapter (trustProxy, bodyLimit). */
  fastify?: Record<string, unknown>;
  /** Nest's own body parser (default on). */
  bodyParser?: boolean;
  /** Runs after the app is created, before init (app.use, app.register, enableCors, setGlobalPrefix, useGlobal*). */
  before?: (app: INestApplication) => unknown;
  logger?: LoggerService;
}

const apps: INestApplication[] = [];

/** Boots and listens on 127.0.0.1; `prefix` is the toolkit's key prefix, `<prefixTag>-<8 hex>:`. */
export async function listenMiddlewareApp(
  prefixTag: string,
  options: MiddlewareAppOptions,
): Promise<{ app: INestApplication; prefix: string }> {
  const prefix = `${prefixTag}-${randomUUID().slice(0, 8)}:`;
  const configure = options.configure;
  @Module({})
  class MiddlewareModule implements NestModule {
    configure(consumer: MiddlewareConsumer): void {
      configure?.(consumer);
    }
  }
  const moduleRef = await Test.createTestingModule({
    imports: [
      RedisToolkitModule.forRoot({
        ...options.toolkit,
        keyPrefix: prefix,
        connection: { url: sharedServers().single.url },
      }),
      MiddlewareModule,
      ...((options.imports ?? []) as never[]),
    ],
    controllers: options.controllers ?? [],
    providers: (options.providers ?? []) as never[],
  }).compile();
  const logger = options.logger ?? (['error'] as const);
  const nestOptions = { logger: logger as never, bodyParser: options.bodyParser ?? true };
  const app =
    options.platform === 'fastify'
      ? moduleRef.createNestApplication(
          new (await import('@nestjs/platform-fastify')).FastifyAdapter(options.fastify as never),
          nestOptions,
        )
      : moduleRef.createNestApplication(nestOptions);
  apps.push(app);
  await options.before?.(app);
  await app.init();
  await app.listen(0, '127.0.0.1');
  return { app, prefix };
}

/** Closes every app listenMiddlewareApp booted since the last call. */
export async function closeMiddlewareApps(): Promise<void> {
  await Promise.all(apps.splice(0).map((a) => a.close()));
}

/** Counts handler runs by a name the test makes unique; `runs.clear()` in a beforeEach starts over. */
export function handlerRuns(): {
  runs: Map<string, number>;
  bump: (key: string) => number;
  ran: (key: string) => number;
} {
  const runs = new Map<string, number>();
  const bump = (key: string): number => {
    const n = (runs.get(key) ?? 0) + 1;
    runs.set(key, n);
    return n;
  };
  return { runs, bump, ran: (key) => runs.get(key) ?? 0 };
}
