/**
 * The cache's own throttled warnings (CacheService's Redis warning: an entry that cannot be read, the L1's; the read
 * path's failed background refresh and value served from grace) count the ones they suppress and log that count at
 * the end of their interval, on an unref'd timer. Until 2026-12-05 nothing closed them at shutdown, so a count still
 * pending then was logged up to 10 s after app.close(), through whichever logger Nest had by then (another app's, in
 * a test run). Now CacheService.onModuleDestroy closes them: the count is logged at close, by this app
 * (test/foundation/warnings-at-shutdown.spec.ts does the same for the other owners).
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { CacheService } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const countLines = (warnings: string[], what: string): string[] =>
  warnings.filter((w) => w.startsWith(`${what}: `) && w.includes('more since the last warning'));

async function cacheApp() {
  const { warnings, logger } = recordingLogger();
  const keyPrefix = `rtk-ws${randomBytes(5).toString('hex')}:`;
  const app = await createToolkitApp({ keyPrefix, cache: { beta: 0 }, logger });
  const cache = app.get(CacheService);
  return { app, cache, warnings, client: app.get(RedisConnection).client as RedisClient, keyPrefix };
}

describe("the cache's warnings counted before app.close() are logged at close, not by a timer that outlives it", () => {
  it("CacheService's Redis warning (an entry of another Redis type, read 3 times)", async () => {
    const { app, cache, warnings, client, keyPrefix } = await cacheApp();
    await client.hset(`${keyPrefix}cache:h`, 'f', 'v');
    for (let i = 0; i < 3; i++) expect(await cache.get('h')).toBeUndefined();
    expect(warnings.filter((w) => w.includes('holds another Redis type'))).toHaveLength(1);
    expect(countLines(warnings, 'cache Redis warnings')).toEqual([]);
    await app.close();
    // before: nothing at close (the count's timer, armed for 10 s after the first warning, was left running)
    expect(countLines(warnings, 'cache Redis warnings')).toEqual([
      'cache Redis warnings: 2 more since the last warning, not logged one by one',
    ]);
  });

  it('a failed background refresh (3 stale keys whose loader throws)', async () => {
    const { app, cache, warnings } = await cacheApp();
    const options = { ttl: 50, staleTtl: 60_000 };
    for (const k of ['r1', 'r2', 'r3']) expect(await cache.getOrSet(k, () => 'old', options)).toBe('old');
    await sleep(100); // past ttl: stale
    const failing = () => {
      throw new Error('database down');
    };
    for (const k of ['r1', 'r2', 'r3']) {
      expect(await cache.getOrSetWithStatus(k, failing, options)).toEqual({ value: 'old', status: 'stale' });
    }
    const failed = () => warnings.filter((w) => w.includes('the stale value stays: database down'));
    expect(await waitFor(() => failed().length > 0, 5_000)).toBe(true);
    await sleep(200); // the other two refreshes fail too
    expect(failed()).toHaveLength(1);
    expect(countLines(warnings, 'failed cache refreshes')).toEqual([]);
    await app.close();
    expect(countLines(warnings, 'failed cache refreshes')).toEqual([
      'failed cache refreshes: 2 more since the last warning, not logged one by one',
    ]);
  });

  it('a value served from grace (3 keys past staleTtl whose loader throws)', async () => {
    const { app, cache, warnings } = await cacheApp();
    const options = { ttl: 50, staleTtl: 0, grace: 60_000 };
    for (const k of ['g1', 'g2', 'g3']) expect(await cache.getOrSet(k, () => 'old', options)).toBe('old');
    await sleep(100); // past ttl and staleTtl, within grace
    const failing = () => {
      throw new Error('database down');
    };
    for (const k of ['g1', 'g2', 'g3']) {
      expect(await cache.getOrSetWithStatus(k, failing, options)).toEqual({ value: 'old', status: 'grace' });
    }
    expect(warnings.filter((w) => w.includes('serving its value from grace'))).toHaveLength(1);
    expect(countLines(warnings, 'cache values served from grace')).toEqual([]);
    await app.close();
    expect(countLines(warnings, 'cache values served from grace')).toEqual([
      'cache values served from grace: 2 more since the last warning, not logged one by one',
    ]);
  });
});
