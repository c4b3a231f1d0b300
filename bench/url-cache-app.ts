/**
 * The URL-cache benchmark's app (bench/url-cache.bench.ts), run as a child process: the same controller and routes,
 * cached by URL either by our HttpCacheInterceptor (URL_CACHE=ours, Redis through the toolkit, L1 off) or by
 * @nestjs/cache-manager's CacheInterceptor with its Redis store (URL_CACHE=cache-manager: cache-manager + @keyv/redis,
 * as in bench/cache.bench.ts). With an in-process tier in front of Redis: URL_CACHE=ours-l1 (our L1) and
 * URL_CACHE=cache-manager-l1 (cache-manager's two-store setup: an in-memory Keyv, without serialization, before
 * @keyv/redis). URL_CACHE=none: the same routes with no cache at all (the HTTP stack's ceiling). Express, or Fastify
 * with PLATFORM=fastify; env PORT, HOST, REDIS_URL.
 */
import 'reflect-metadata';
import {
  Controller,
  Get,
  Module,
  Param,
  Query,
  UseInterceptors,
  type DynamicModule,
  type LogLevel,
  type Type,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { CacheInterceptor, CacheModule, CacheTTL as CmCacheTTL } from '@nestjs/cache-manager';
import KeyvRedis from '@keyv/redis';
import { Keyv } from 'keyv';
import { RedisToolkitModule } from '../lib/index.js';
import { CacheTTL, HttpCacheInterceptor } from '../lib/advanced.js';

const TTL = 10 * 60_000;
const which = process.env.URL_CACHE;
const redisUrl = process.env.REDIS_URL;
const MODES = ['ours', 'ours-l1', 'cache-manager', 'cache-manager-l1', 'none'];
if (which === undefined || !MODES.includes(which)) throw new Error(`URL_CACHE must be one of ${MODES.join(', ')}`);
if (!redisUrl) throw new Error('REDIS_URL is required');

/** A ~1 KB JSON page, different per URL. */
const page = (id: string, n: string) => ({
  id,
  page: n,
  items: Array.from({ length: 8 }, (_, i) => ({ sku: `${id}-${n}-${i}`, name: `Item ${i}`, price: 100 + i })),
  description: 'x'.repeat(600),
});

const noop: ClassDecorator = () => undefined;

function controller(interceptor: Type<unknown> | undefined, ttl: ClassDecorator): Type<unknown> {
  @Controller('catalog')
  @(interceptor ? UseInterceptors(interceptor) : noop)
  @ttl
  class CatalogController {
    @Get('health')
    health(): { ok: true } {
      return { ok: true };
    }

    @Get(':id')
    one(@Param('id') id: string, @Query('page') n = '1'): ReturnType<typeof page> {
      return page(id, n);
    }
  }
  return CatalogController;
}

@Module({})
class Root {}

function appModule(): DynamicModule {
  if (which === 'ours' || which === 'ours-l1') {
    return {
      module: Root,
      imports: [
        RedisToolkitModule.forRoot({
          connection: { url: redisUrl! },
          // per platform: an entry holds what its platform sends (Express's ETag with it, Fastify none), and an
          // Express app reading Fastify's entries hashed an ETag per hit
          keyPrefix: `bench:url:${process.env.PLATFORM ?? 'express'}:`,
          commandTimeout: 5_000,
          cache: { defaultTtl: TTL, beta: 0, ...(which === 'ours-l1' && { l1: { max: 10_000, ttl: TTL } }) },
        }),
      ],
      controllers: [controller(HttpCacheInterceptor, CacheTTL(TTL))],
    };
  }
  if (which === 'none') return { module: Root, controllers: [controller(undefined, noop)] };
  const redisStore = new KeyvRedis(redisUrl!);
  // cache-manager's documented multi-tier setup; the memory tier keeps objects as they are (no serialize).
  const stores =
    which === 'cache-manager-l1'
      ? [new Keyv({ store: new Map(), serialize: undefined, deserialize: undefined }), redisStore]
      : [redisStore];
  return {
    module: Root,
    imports: [CacheModule.register({ stores, ttl: TTL })],
    controllers: [controller(CacheInterceptor, CmCacheTTL(TTL))],
  };
}

async function bootstrap(): Promise<void> {
  const options = { logger: ['error', 'warn'] satisfies LogLevel[] };
  const app =
    process.env.PLATFORM === 'fastify'
      ? await NestFactory.create(appModule(), new FastifyAdapter(), options)
      : await NestFactory.create(appModule(), options);
  app.enableShutdownHooks();
  await app.listen(Number(process.env.PORT ?? 3002), process.env.HOST ?? '127.0.0.1');
}

bootstrap().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
