/**
 * `npm run bench:url-cache-hit`: the CPU of HttpCacheInterceptor's hit path alone,
 * in-process (no HTTP stack, no Nest router): a Redis hit (L1 off: one GET, batched per turn) and an L1 hit, on the
 * url-cache bench's route and ~1 KB pages (bench/url-cache-app.ts), the reply Fastify-like. Requests come in waves of
 * HIT_BATCH per event-loop turn (the keys of one MGET, as the HTTP bench's turns carry: about 8 at 32 connections),
 * each wave waiting for its answers, HIT_LANES waves in flight. One lane makes every MGET the same size, so two runs
 * in a row differ by about 1 % where the HTTP bench's app CPU per request moves by 10-30 % between rounds on a shared
 * box: the tool to measure a change of the interceptor, the read path or the batcher before the HTTP A/B (alternate
 * the old and new builds: the level itself drifts with the load on the box, 8 to 12 µs a Redis hit within an hour).
 * The CPU is this process's (user + system: the socket writes count), per request. env REDIS_URL (else a private
 * redis-server), HIT_S seconds per tier.
 */
import 'reflect-metadata';
import { Controller, Get, Module, UseInterceptors, type CallHandler, type ExecutionContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { lastValueFrom, of } from 'rxjs';
import { RedisToolkitModule } from '../lib/index.js';
import { CacheTTL, HttpCacheInterceptor } from '../lib/advanced.js';
import { startRedisServer } from '../test/support/redis-server.js';
import { runBench } from './support/run-bench.js';

const TTL = 10 * 60_000;
const URLS = 200;
const BATCH = Number(process.env.HIT_BATCH ?? 8);
const LANES = Number(process.env.HIT_LANES ?? 1);
const SECONDS = Number(process.env.HIT_S ?? 3);

/** The url-cache bench's page: ~1 KB of JSON, different per URL. */
const page = (id: string, n: string) => ({
  id,
  page: n,
  items: Array.from({ length: 8 }, (_, i) => ({ sku: `${id}-${n}-${i}`, name: `Item ${i}`, price: 100 + i })),
  description: 'x'.repeat(600),
});
const path = (i: number) => `/catalog/p${i % 20}?page=${i % URLS}`;

@Controller('catalog')
@UseInterceptors(HttpCacheInterceptor)
@CacheTTL(TTL)
class CatalogController {
  @Get(':id')
  one(): undefined {
    return undefined;
  }
}

/** A Fastify-like reply: header() and getHeader(), no Node setHeader. */
class Reply {
  statusCode = 200;
  sent = false;
  private readonly headers: Record<string, string> = {};
  header(name: string, value: string): this {
    this.headers[name.toLowerCase()] = value;
    return this;
  }
  getHeader(name: string): string | undefined {
    return this.headers[name.toLowerCase()];
  }
}

function context(url: string, reply: Reply): ExecutionContext {
  const request = { method: 'GET', url, headers: {} };
  return {
    getType: () => 'http',
    getArgByIndex: (i: number) => (i === 0 ? request : reply),
    getClass: () => CatalogController,
    getHandler: () => CatalogController.prototype.one,
  } as unknown as ExecutionContext;
}

/** µs of CPU per request of one tier (a Nest context of its own), after every URL is stored and a warm-up second. */
async function measure(url: string, l1: boolean): Promise<{ cpuUs: number; requests: number }> {
  @Module({
    imports: [
      RedisToolkitModule.forRoot({
        connection: { url },
        keyPrefix: 'bench:hit:',
        cache: { defaultTtl: TTL, beta: 0, ...(l1 && { l1: { max: 10_000, ttl: TTL } }) },
      }),
    ],
    providers: [HttpCacheInterceptor],
  })
  class Root {}
  const app = await NestFactory.createApplicationContext(Root, { logger: ['error', 'warn'] });
  try {
    const interceptor = app.get(HttpCacheInterceptor);
    const one = (i: number): Promise<unknown> => {
      const reply = new Reply();
      const next: CallHandler = { handle: () => of(page(`p${i % 20}`, String(i % URLS))) };
      return lastValueFrom(interceptor.intercept(context(path(i), reply), next));
    };
    for (let i = 0; i < URLS * 2; i++) await one(i);
    const run = async (seconds: number): Promise<{ cpuUs: number; requests: number }> => {
      let n = 0;
      const end = performance.now() + seconds * 1000;
      const before = process.cpuUsage();
      const lanes = Array.from({ length: LANES }, async (_, lane) => {
        while (performance.now() < end) {
          await new Promise((r) => setImmediate(r));
          const wave: Promise<unknown>[] = [];
          for (let b = 0; b < BATCH; b++) wave.push(one(n++ * 7 + lane));
          await Promise.all(wave);
        }
      });
      await Promise.all(lanes);
      const used = process.cpuUsage(before);
      return { cpuUs: (used.user + used.system) / n, requests: n };
    };
    await run(1);
    return await run(SECONDS);
  } finally {
    await app.close();
  }
}

async function main(): Promise<void> {
  const server = process.env.REDIS_URL ? undefined : await startRedisServer();
  try {
    const url = process.env.REDIS_URL ?? server!.url;
    for (const l1 of [false, true]) {
      const r = await measure(url, l1);
      process.stdout.write(
        `${l1 ? 'L1 hit   ' : 'Redis hit'}: ${r.cpuUs.toFixed(2)} µs CPU per request (${r.requests} requests, ` +
          `${BATCH} per turn, ${LANES} in flight)\n`,
      );
    }
  } finally {
    await server?.stop();
  }
}

runBench(main);
