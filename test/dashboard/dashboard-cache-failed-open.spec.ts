import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { CacheService, PubSubService } from '../../lib/index.js';
import { type DashboardFrame, DashboardService, RedisToolkitDashboardModule } from '../../lib/dashboard/index.js';
import { readDashboardFrame, sumFrames } from '../../lib/dashboard/dashboard.frame.js';
import { DASHBOARD_CHANNEL } from '../../lib/dashboard/dashboard.service.js';
import { chromiumAvailable, launchChromium } from '../support/chromium.js';
import { quietFrame } from '../support/dashboard-frames.js';
import { trackForCleanup } from '../support/private-servers.js';
import { type RedisServerHandle, startRedisServer } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp, type ToolkitAppOptions } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

/**
 * Cache reads served without the cache (Redis could not be reached and `failOpen` let them go on:
 * `CacheService.stats().failedOpen`, 352af3b) are in the dashboard frame's cache section as the interval's count
 * (`cache.failedOpen`), summed across instances and shown on the page. Before 2026-12-05 the frame had only `misses`,
 * which includes them: an outage's reads looked like plain misses. A frame of an older release (without the count)
 * is still kept and summed. One private server, paused by the tests.
 */
const hasChromium = chromiumAvailable();
const COMMAND_TIMEOUT = 300;

let server: RedisServerHandle;
beforeAll(async () => {
  server = trackForCleanup(await startRedisServer());
});
afterEach(async () => {
  await closeToolkitApps();
  server.resume();
});

async function dashboardApp(extra: ToolkitAppOptions = {}) {
  const app = await createToolkitApp({
    target: { url: server.url },
    keyPrefix: `rtk-dash-fo-${randomBytes(3).toString('hex')}:`,
    commandTimeout: COMMAND_TIMEOUT,
    maxReconnectDelay: 100,
    imports: [RedisToolkitDashboardModule.register({ unsafeNoAuth: true, intervalMs: 60_000 })],
    ...extra,
  });
  return { app, dashboard: app.get(DashboardService), cache: app.get(CacheService) };
}

/** Waits until at least `ms` remain before the wall-clock minute, where the app's own one-minute timer ticks. */
async function clearOfTheMinuteTick(ms: number): Promise<void> {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < ms) await sleep(left + 100);
}

/** 3 getOrSet and 1 get while the server is paused: 4 reads failed open; then one hit and one miss Redis served. */
async function readsDuringAnOutage(cache: CacheService): Promise<void> {
  expect(await cache.getOrSet('warm', () => 'w')).toBe('w'); // a miss Redis answered
  expect(await cache.getOrSet('warm', () => 'x')).toBe('w'); // a hit
  server.pause();
  const served = await Promise.all([
    ...['a', 'b', 'c'].map((k) => cache.getOrSetWithStatus(k, () => `v-${k}`)),
    cache.get('d'),
  ]);
  server.resume();
  expect(served).toEqual([
    { value: 'v-a', status: 'miss', degraded: 'fail-open' },
    { value: 'v-b', status: 'miss', degraded: 'fail-open' },
    { value: 'v-c', status: 'miss', degraded: 'fail-open' },
    undefined,
  ]);
  expect(cache.stats()).toMatchObject({ hits: 1, misses: 5, failedOpen: 4 });
}

const failedOpenOf = (dashboard: DashboardService) =>
  dashboard.snapshot().sum.reduce((n, s) => n + (s.cache.failedOpen ?? 0), 0);

describe('cache reads that failed open, in the dashboard', () => {
  it('a paused Redis: the frame counts them (the change since the last frame), the sum adds them once', async () => {
    await clearOfTheMinuteTick(15_000);
    const { dashboard, cache } = await dashboardApp();
    await dashboard.tick();
    await readsDuringAnOutage(cache);
    const frame = await dashboard.tick();
    // before: no failedOpen in the frame (the 4 reads only in misses)
    expect(frame.cache).toMatchObject({ hits: 1, misses: 5, failedOpen: 4 });
    // as another instance reads it off the channel
    expect(readDashboardFrame(JSON.parse(JSON.stringify(frame)))?.cache.failedOpen).toBe(4);
    // the next frame has only what came since
    const next = await dashboard.tick();
    expect(next.cache).toMatchObject({ hits: 0, misses: 0, failedOpen: 0 });
    await dashboard.tick(); // the frame is summed at the latest at the second tick after it was made
    expect(dashboard.snapshot().sum.at(-1)?.cache).toMatchObject({ hits: 1, misses: 5, failedOpen: 4 });
    await dashboard.tick();
    expect(failedOpenOf(dashboard)).toBe(4); // once
  });

  it("an older instance's frame (no failedOpen) and a newer one's are kept and summed", async () => {
    const { app, dashboard } = await dashboardApp();
    await dashboard.tick();
    const at = Date.now() - 40_000; // due in the next sum
    const cache = quietFrame('', 0).cache;
    const older = quietFrame('older#0000f1', at, { cache: { ...cache, hits: 2, misses: 3 } });
    const newer = quietFrame('newer#0000f2', at, { cache: { ...cache, misses: 7, failedOpen: 6 } });
    expect(older.cache).not.toHaveProperty('failedOpen');
    const pubsub = app.get(PubSubService);
    await pubsub.publish(DASHBOARD_CHANNEL, older);
    await pubsub.publish(DASHBOARD_CHANNEL, newer);
    const ids = ['older#0000f1', 'newer#0000f2'];
    expect(await waitFor(() => ids.every((id) => id in dashboard.snapshot().instances), 10_000)).toBe(true);
    const kept = dashboard.snapshot().instances;
    expect(kept['older#0000f1'][0].cache).not.toHaveProperty('failedOpen');
    expect(kept['newer#0000f2'][0].cache.failedOpen).toBe(6);
    await dashboard.tick();
    const sum = dashboard.snapshot().sum.at(-1) as DashboardFrame;
    expect(sum.instances).toBe(2); // this instance's own frame waits for the next sum
    expect(sum.cache).toMatchObject({ hits: 2, misses: 10, failedOpen: 6 });
  });

  it('the count is checked like the others; a sum always has it (pure)', () => {
    const at = Date.now();
    const older = quietFrame('old#0000f3', at, { cache: { ...quietFrame('', 0).cache, hits: 1 } });
    const newer = quietFrame('new#0000f4', at, { cache: { ...quietFrame('', 0).cache, misses: 2, failedOpen: 2 } });
    expect(readDashboardFrame(older)).toEqual(older);
    expect(readDashboardFrame(older)?.cache).not.toHaveProperty('failedOpen');
    expect(readDashboardFrame(newer)).toEqual(newer);
    const bad = [null, -1, '2', Number.NaN, Number.POSITIVE_INFINITY].map((failedOpen) => ({
      ...newer,
      cache: { ...newer.cache, failedOpen },
    }));
    expect(bad.map((f) => readDashboardFrame(f))).toEqual(bad.map(() => undefined));
    expect(sumFrames([older], at, 1).cache.failedOpen).toBe(0);
    expect(sumFrames([older, newer, newer], at, 1).cache).toMatchObject({ hits: 1, misses: 4, failedOpen: 4 });
  });
});

describe('the page', () => {
  (hasChromium ? it : it.skip)(
    "shows the last minute's cache reads that failed open, under the hit ratio",
    async () => {
      await clearOfTheMinuteTick(20_000);
      const { app, dashboard, cache } = await dashboardApp({ http: true });
      await dashboard.tick();
      await readsDuringAnOutage(cache);
      for (let i = 0; i < 3; i++) await dashboard.tick(); // the frame, then its sum
      expect(failedOpenOf(dashboard)).toBe(4);
      const { port } = app.app.getHttpServer().address() as AddressInfo;
      const context = await launchChromium();
      try {
        const tab = await context.newPage();
        await tab.goto(`http://127.0.0.1:${port}/_toolkit`);
        await tab.waitForSelector('#status.live', { timeout: 10_000 });
        await tab.waitForSelector('#cache-failed-open:not([data-count="0"])', { timeout: 10_000 });
        expect(await tab.getAttribute('#cache-failed-open', 'data-count')).toBe('4');
        expect(await tab.textContent('#cache-failed-open')).toBe('4');
      } finally {
        await context.close();
      }
    },
  );
});
