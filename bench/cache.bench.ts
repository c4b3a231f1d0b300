// `npm run bench:cache`: our cache vs raw ioredis GET+JSON.parse, @nestjs/cache-manager (cache-manager + @keyv/redis)
// and bentocache, on one Redis, one 1 KB JSON value shape, 50 concurrent callers; then L1 hits; then loader calls at
// 1,000 concurrent cold misses per library.
import 'reflect-metadata';
import type { INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { CACHE_MANAGER, CacheModule } from '@nestjs/cache-manager';
import KeyvRedis from '@keyv/redis';
import { BentoCache, bentostore } from 'bentocache';
import { memoryDriver } from 'bentocache/drivers/memory';
import { redisDriver } from 'bentocache/drivers/redis';
import type { Cache } from 'cache-manager';
import { Redis } from 'ioredis';
import { CacheService, RedisToolkitModule } from '../lib/index.js';
import { benchRedis } from './support/bench-redis.js';
import {
  measure,
  printTable,
  saveResults,
  type BenchRow,
  type MeasureOptions,
  interleaved,
} from './support/measure.js';

const KEYS = 1_000;
const CONCURRENCY = 50;
const COLD_CALLERS = 1_000;
const ROUND: MeasureOptions = { concurrency: CONCURRENCY, durationMs: 1_000, warmupMs: 200, rounds: 1 };
const ROUNDS = 5;
const TTL = 10 * 60_000;

/** A ~1 KB JSON object (the same shape for every library). */
const VALUE = {
  id: 42,
  name: 'Product 42',
  tags: ['tea', 'green', 'organic'],
  description: 'x'.repeat(820),
  price: { amount: 1290, currency: 'EUR' },
  stock: [1, 2, 3, 4, 5, 6, 7, 8],
  updatedAt: '2026-11-23T12:00:00.000Z',
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function toolkit(url: string, l1: boolean): Promise<{ app: INestApplicationContext; cache: CacheService }> {
  const app = await NestFactory.createApplicationContext(
    RedisToolkitModule.forRoot({
      connection: { url },
      keyPrefix: 'bench:rtk:',
      commandTimeout: 5_000,
      cache: { defaultTtl: TTL, ...(l1 ? { l1: { max: 10_000, ttl: TTL } } : {}) },
    }),
    { logger: ['error'] },
  );
  return { app, cache: app.get(CacheService) };
}

async function main(): Promise<void> {
  const redis = await benchRedis();
  const url = redis.url;
  const rows: BenchRow[] = [];
  const row = (library: string, operation: string, m: Awaited<ReturnType<typeof measure>>, notes?: string) =>
    rows.push({ feature: 'cache', library, operation, ...m, notes });
  const keyAt = (i: number) => `p:${i % KEYS}`;
  const json = JSON.stringify(VALUE);

  // --- the peers -----------------------------------------------------------------------------------------------
  const raw = new Redis(url);
  const ours = await toolkit(url, false);
  const oursL1 = await toolkit(url, true);
  const nestCm = await NestFactory.createApplicationContext(
    CacheModule.register({ stores: [new KeyvRedis(url)], ttl: TTL }),
    { logger: ['error'] },
  );
  const cacheManager = nestCm.get<Cache>(CACHE_MANAGER);
  const bento = new BentoCache({
    default: 'l2',
    stores: {
      l2: bentostore().useL2Layer(redisDriver({ connection: new Redis(url) })),
      both: bentostore()
        .useL1Layer(memoryDriver({ maxItems: 10_000 }))
        .useL2Layer(redisDriver({ connection: new Redis(url) })),
    },
  });
  const bentoL1 = bento.use('both');

  // --- populate the same 1,000 keys in each library's own format ---------------------------------------------
  for (let i = 0; i < KEYS; i++) {
    const key = keyAt(i);
    await Promise.all([
      raw.set(`bench:raw:${key}`, json, 'PX', TTL),
      ours.cache.set(key, VALUE, { ttl: TTL }),
      cacheManager.set(`bench:cm:${key}`, VALUE, TTL),
      bento.set({ key, value: VALUE, ttl: TTL }),
      bentoL1.set({ key: `l1:${key}`, value: VALUE, ttl: TTL }),
    ]);
  }
  const neverCalled = (): never => {
    throw new Error('the benchmark expected a hit');
  };

  // --- Redis hits, then L1 hits ------------------------------------------------------------------------------
  for (let i = 0; i < KEYS; i++) {
    await oursL1.cache.getOrSet(keyAt(i), neverCalled);
    await bentoL1.getOrSet({ key: `l1:${keyAt(i)}`, factory: neverCalled, ttl: TTL });
  }
  let n = 0;
  const hits = await interleaved(
    {
      raw: async () => JSON.parse((await raw.get(`bench:raw:${keyAt(n++)}`))!),
      ours: () => ours.cache.getOrSet(keyAt(n++), neverCalled),
      oursGet: () => ours.cache.get(keyAt(n++)),
      cm: () => cacheManager.get(`bench:cm:${keyAt(n++)}`),
      bento: () => bento.getOrSet({ key: keyAt(n++), factory: neverCalled, ttl: TTL }),
    },
    ROUNDS,
    ROUND,
  );
  row('ioredis (raw GET + JSON.parse)', 'redis hit', hits.raw, 'plain ioredis client, no command timeout');
  row('nestjs-redis-toolkit', 'redis hit', hits.ours, 'getOrSet, L1 off');
  row('nestjs-redis-toolkit (get)', 'redis hit', hits.oursGet, 'cache.get, L1 off');
  row('@nestjs/cache-manager + @keyv/redis', 'redis hit', hits.cm, 'cache.get');
  row('bentocache (L2 only)', 'redis hit', hits.bento, 'getOrSet');
  const l1 = await interleaved(
    {
      ours: () => oursL1.cache.getOrSet(keyAt(n++), neverCalled),
      bento: () => bentoL1.getOrSet({ key: `l1:${keyAt(n++)}`, factory: neverCalled, ttl: TTL }),
    },
    ROUNDS,
    ROUND,
  );
  row('nestjs-redis-toolkit', 'L1 hit', l1.ours, 'getOrSet, L1 on');
  row('bentocache', 'L1 hit', l1.bento, 'getOrSet, memory L1');

  // --- 1,000 concurrent cold misses: how many loader calls? -----------------------------------------------------
  const cold = async (
    library: string,
    call: (key: string, loader: () => Promise<typeof VALUE>) => Promise<unknown>,
  ) => {
    const key = `cold:${Math.random().toString(36).slice(2)}`;
    let calls = 0;
    const loader = async () => {
      calls++;
      await sleep(50);
      return VALUE;
    };
    const started = performance.now();
    await Promise.all(Array.from({ length: COLD_CALLERS }, () => call(key, loader)));
    const ms = performance.now() - started;
    rows.push({
      feature: 'cache',
      library,
      operation: '1,000 cold misses',
      opsPerSec: COLD_CALLERS / (ms / 1000),
      p50Ms: ms,
      p99Ms: ms,
      errors: 0,
      notes: `loader calls: ${calls}`,
    });
    return calls;
  };
  const coldCalls: Record<string, number> = {};
  coldCalls['nestjs-redis-toolkit'] = await cold('nestjs-redis-toolkit', (k, l) =>
    ours.cache.getOrSet(k, l, { ttl: TTL }),
  );
  coldCalls['ioredis (naive cache-aside)'] = await cold('ioredis (naive cache-aside)', async (k, l) => {
    const hit = await raw.get(`bench:raw:${k}`);
    if (hit !== null) return JSON.parse(hit);
    const v = await l();
    await raw.set(`bench:raw:${k}`, JSON.stringify(v), 'PX', TTL);
    return v;
  });
  coldCalls['@nestjs/cache-manager + @keyv/redis'] = await cold('@nestjs/cache-manager + @keyv/redis', (k, l) =>
    cacheManager.wrap(`bench:cm:${k}`, l, TTL),
  );
  coldCalls['bentocache'] = await cold('bentocache', (k, l) => bento.getOrSet({ key: k, factory: l, ttl: TTL }));

  const table = printTable(
    'Cache: 1 KB JSON value, 50 concurrent callers over 1,000 keys (cold misses: one key, 1,000 callers)',
    rows,
  );
  const ops = (library: string, operation: string) =>
    rows.find((r) => r.library === library && r.operation === operation)!.opsPerSec;
  const ratios = {
    redisHitVsRawIoredis: ops('nestjs-redis-toolkit', 'redis hit') / ops('ioredis (raw GET + JSON.parse)', 'redis hit'),
    redisHitVsCacheManager:
      ops('nestjs-redis-toolkit', 'redis hit') / ops('@nestjs/cache-manager + @keyv/redis', 'redis hit'),
    redisHitVsBentocache: ops('nestjs-redis-toolkit', 'redis hit') / ops('bentocache (L2 only)', 'redis hit'),
    l1HitVsRawIoredis: ops('nestjs-redis-toolkit', 'L1 hit') / ops('ioredis (raw GET + JSON.parse)', 'redis hit'),
  };
  const targets = { redisHitVsRawIoredis: 0.9, redisHitVsCacheManager: 1.5, l1HitVsRawIoredis: 20, coldLoaderCalls: 1 };
  process.stdout.write(
    `ratios: ${JSON.stringify(ratios, null, 2)}\ncold-miss loader calls: ${JSON.stringify(coldCalls)}\n`,
  );
  saveResults('cache', rows, { ratios, targets, coldLoaderCalls: coldCalls, table });

  await bento.disconnectAll();
  await Promise.all([ours.app.close(), oursL1.app.close(), nestCm.close()]);
  await (cacheManager as Cache & { disconnect?: () => Promise<void> }).disconnect?.();
  raw.disconnect();
  await redis.stop();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
