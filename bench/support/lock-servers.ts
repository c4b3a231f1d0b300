import type { INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { RedisToolkitModule } from '../../lib/index.js';
import { startRedisServer, type RedisServerHandle } from '../../test/support/redis-server.js';
import { standaloneRedis } from './load-profile.js';
import { printTable, saveResults, type BenchRow } from './measure.js';

export type LockMode = 'single' | 'quorum';

/** Our toolkit as the lock benchmarks run it: `urls[0]` as the connection, all of `urls` as the quorum. */
export function lockApp(
  urls: string[],
  mode: LockMode,
  lock: { ttl: number; retryMs: number; jitterMs: number },
): Promise<INestApplicationContext> {
  return NestFactory.createApplicationContext(
    RedisToolkitModule.forRoot({
      connection: { url: urls[0] },
      keyPrefix: 'bench:rtk:',
      commandTimeout: 5_000,
      lock: {
        ttl: lock.ttl,
        retry: { count: 100_000, delay: lock.retryMs, jitter: lock.jitterMs },
        ...(mode === 'quorum' ? { quorum: { nodes: urls.map((url) => ({ url })) } } : {}),
      },
    }),
    { logger: ['error'] },
  );
}

/**
 * Runs `scenario` on one server (BENCH_REDIS_URL, or a private one set up like `npm run bench`'s for the profile:
 * pinned, with the neighbour under `--load`), then on a 3-node quorum of private servers,
 * prints the table and saves bench/results/<feature>.json; exits the process when done.
 */
export async function runSingleAndQuorum(
  feature: string,
  title: string,
  scenario: (mode: LockMode, urls: string[], rows: BenchRow[]) => Promise<void>,
  settings: Record<string, unknown>,
): Promise<void> {
  const started = Date.now();
  const single = await standaloneRedis();
  const singleUrl = single.url;
  const quorum: RedisServerHandle[] = await Promise.all([0, 1, 2].map(() => startRedisServer()));
  const servers = quorum;
  const rows: BenchRow[] = [];
  try {
    await scenario('single', [singleUrl], rows);
    await scenario(
      'quorum',
      quorum.map((s) => s.url),
      rows,
    );
  } finally {
    await Promise.all([single.stop(), ...servers.map((s) => s.stop())]);
  }
  const table = printTable(title, rows);
  saveResults(feature, rows, { table, settings, durationMs: Date.now() - started });
  process.exit(0);
}
