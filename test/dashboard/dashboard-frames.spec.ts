import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { CacheService, PubSubService } from '../../lib/index.js';
import { type DashboardFrame, DashboardService, RedisToolkitDashboardModule } from '../../lib/dashboard/index.js';
import { isDashboardFrame, MAX_NAME_LENGTH } from '../../lib/dashboard/dashboard.frame.js';
import { DASHBOARD_CHANNEL } from '../../lib/dashboard/dashboard.service.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

/**
 * What arrives on the dashboard channel comes from anyone who can PUBLISH on the Redis (another app on a shared Redis,
 * an older or newer release, a hand-typed redis-cli line): it is checked before it is kept, summed and sent to pages.
 * A frame that has a frame's outline but not its contents (a null section, a count that is not a number, a policy
 * that is not a pair, thousands of tags, the page's own `sum` id) must be dropped, not break every sum and page.
 */
afterEach(() => closeToolkitApps());

async function dashboardApp() {
  return createToolkitApp({
    keyPrefix: `rtk-dash-frames-${randomBytes(4).toString('hex')}:`,
    imports: [RedisToolkitDashboardModule.register({ unsafeNoAuth: true, intervalMs: 60_000 })],
  });
}

/** Frames that the shallow outline check let in, each wrong in one way. */
function misfits(valid: DashboardFrame, at: number): Record<string, unknown>[] {
  return [
    { ...valid, instance: 'null-cache#00000a', at, cache: null },
    { ...valid, instance: 'string-count#00000b', at, cache: { ...valid.cache, hits: '1e9' } },
    { ...valid, instance: 'policy-not-pair#00000c', at, rateLimit: { login: 5 } },
    { ...valid, instance: 'tag-not-pair#00000d', at, tags: [7] },
    { ...valid, instance: 'null-locks#00000e', at, locks: null },
    { ...valid, instance: 'many-tags#00000f', at, tags: Array.from({ length: 5_000 }, (_, i) => [`t${i}`, 1]) },
    {
      ...valid,
      instance: 'many-policies#000010',
      at,
      rateLimit: Object.fromEntries(Array.from({ length: 5_000 }, (_, i) => [`p${i}`, [1, 0]])),
    },
    { ...valid, instance: 'bad-redis#000011', at, redis: { latencyMs: 'slow' } },
    { ...valid, instance: 'sum', at },
    { ...valid, instance: 'infinite-ms#000012', at, ms: -1 },
  ];
}

describe('frames received on the channel', () => {
  it('a frame with the outline of one but wrong contents is dropped; sums and pages stay whole', async () => {
    const app = await dashboardApp();
    const dashboard = app.get(DashboardService);
    const pubsub = app.get(PubSubService);
    const valid = await dashboard.tick();
    // made 40 s ago: due in the next sum (more than half the 60 s interval old)
    const at = Date.now() - 40_000;
    const bad = misfits(valid, at);
    for (const frame of bad) await pubsub.publish(DASHBOARD_CHANNEL, frame);
    // A valid frame after them on the same channel: once it is in, every message before it was handled.
    await pubsub.publish(DASHBOARD_CHANNEL, { ...valid, instance: 'marker#0000ff', at });
    expect(await waitFor(() => 'marker#0000ff' in dashboard.snapshot().instances, 10_000)).toBe(true);
    const kept = Object.keys(dashboard.snapshot().instances).filter(
      (id) => id !== dashboard.instanceId && id !== 'marker#0000ff',
    );
    expect(kept).toEqual([]);
    // the sum of the interval (the marker's frame in it) is made, with numbers (the minute timer may have made it)
    await dashboard.tick();
    const sums = dashboard.snapshot().sum;
    expect(sums.some((s) => s.instances >= 1)).toBe(true);
    expect(sums.filter((s) => !Number.isFinite(s.cache.hits) || !Number.isFinite(s.locks.acquired))).toEqual([]);
    expect(JSON.stringify(dashboard.snapshot()).length).toBeLessThan(20_000);
  });

  it('the check (pure): every frame this package makes passes, each misfit does not', async () => {
    const app = await dashboardApp();
    const valid = await app.get(DashboardService).tick();
    const withEverything: DashboardFrame = {
      ...valid,
      tags: [['a', 1]],
      rateLimit: { login: [3, 1] },
      redis: { latencyMs: 0.4, usedMemory: 1_000, opsPerSec: 2, clients: 3 },
      sessions: { active: 4, created: 1, destroyed: 0 },
    };
    expect([isDashboardFrame(valid), isDashboardFrame(withEverything)]).toEqual([true, true]);
    const verdicts = misfits(valid, Date.now()).map((f) => [f.instance, isDashboardFrame(f)]);
    expect(verdicts).toEqual(misfits(valid, 0).map((f) => [f.instance, false]));
  });

  it("an instance's own frame with a 500-character tag name passes the others' check (the name is cut)", async () => {
    const app = await dashboardApp();
    const dashboard = app.get(DashboardService);
    // clear of the wall-clock minute, where the app's own timer ticks and would take the tag into its frame
    const left = 60_000 - (Date.now() % 60_000);
    if (left < 2_000) await sleep(left + 100);
    await dashboard.tick();
    await app.get(CacheService).invalidateTags('t'.repeat(500));
    const frame = await dashboard.tick();
    expect(frame.tags).toEqual([['t'.repeat(MAX_NAME_LENGTH), 1]]);
    expect(isDashboardFrame(JSON.parse(JSON.stringify(frame)))).toBe(true);
  });
});
