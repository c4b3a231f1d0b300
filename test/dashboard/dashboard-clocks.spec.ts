import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { PubSubService } from '../../lib/index.js';
import { type DashboardFrame, DashboardService, RedisToolkitDashboardModule } from '../../lib/dashboard/index.js';
import { MAX_POLICIES, readDashboardFrame } from '../../lib/dashboard/dashboard.frame.js';
import { DASHBOARD_CHANNEL } from '../../lib/dashboard/dashboard.service.js';
import { shifted } from '../support/clock-shift.js';
import { quietFrame } from '../support/dashboard-frames.js';
import { trackForCleanup } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { type RedisServerHandle, startRedisServer } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

/**
 * Instances whose clocks disagree with this one's, and the names a frame may carry. DESIGN.md: nothing fails
 * silently, so a frame from a clock far behind is logged as one far ahead is, and a frame left out is logged; a
 * frame's counts are summed once. One private server; frames are PUBLISHed as another instance (or anyone) would.
 */

let server: RedisServerHandle;
beforeAll(async () => {
  server = trackForCleanup(await startRedisServer());
});
afterEach(closeToolkitApps);

async function dashboardApp() {
  const rec = recordingLogger();
  const app = await createToolkitApp({
    target: { url: server.url },
    keyPrefix: `rtk-dash-clocks-${randomBytes(3).toString('hex')}:`,
    logger: rec.logger,
    imports: [RedisToolkitDashboardModule.register({ unsafeNoAuth: true, intervalMs: 60_000 })],
  });
  const dashboard = app.get(DashboardService);
  const channel = `${(app.get(PubSubService) as unknown as { channelPrefix: string }).channelPrefix}${DASHBOARD_CHANNEL}`;
  const redis = trackForCleanup(new Redis({ port: server.port, lazyConnect: true }));
  const send = (message: unknown) => redis.publish(channel, JSON.stringify(message));
  /** Sends a frame of another instance and waits until it was handled (messages of one connection come in order). */
  const marker = quietFrame('marker#00ffff', 0);
  let markers = 0;
  const handled = async () => {
    const at = Date.now() - 50_000 + ++markers;
    await send({ ...marker, at });
    expect(await waitFor(() => dashboard.snapshot().instances['marker#00ffff']?.at(-1)?.at === at, 10_000)).toBe(true);
  };
  return { app, dashboard, send, handled, ...rec };
}

/** Waits until at least `ms` remain before the wall-clock minute, where the app's own one-minute timer ticks. */
async function clearOfTheMinuteTick(ms: number): Promise<void> {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < ms) await sleep(left + 100);
}

const hits = (n: number) => ({ cache: { ...quietFrame('', 0).cache, hits: n } });
const summedHits = (dashboard: DashboardService) => dashboard.snapshot().sum.reduce((n, s) => n + s.cache.hits, 0);

describe('an instance whose clock is behind, or steps back', () => {
  it('frames an hour behind: kept, each summed once, and logged once naming the instance, as a clock ahead is', async () => {
    await clearOfTheMinuteTick(15_000);
    const { dashboard, send, handled, warnings } = await dashboardApp();
    await dashboard.tick();
    const behind = Date.now() - 3_600_000;
    await send(quietFrame('behind#00d001', behind, hits(3)));
    await send(quietFrame('behind#00d001', behind + 60_000, hits(4)));
    await handled();
    expect(dashboard.snapshot().instances['behind#00d001']?.map((f) => f.at)).toEqual([behind, behind + 60_000]);
    for (let i = 0; i < 3; i++) await dashboard.tick();
    expect(summedHits(dashboard)).toBe(7);
    const lines = warnings.filter((w) => w.includes('"behind#00d001"'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/clock.*about 3600 s behind.*summed when they arrive.*NTP/);
  });

  it("a frame not after its instance's last one (sent twice, or a clock stepped back): dropped, logged", async () => {
    await clearOfTheMinuteTick(15_000);
    const { dashboard, send, handled, warnings } = await dashboardApp();
    await dashboard.tick();
    const at = Date.now() - 30_000;
    await send(quietFrame('repeat#00d002', at, hits(1)));
    await send(quietFrame('repeat#00d002', at, hits(5))); // the same time again
    await send(quietFrame('repeat#00d002', at - 1_000, hits(9))); // earlier
    await handled();
    for (let i = 0; i < 3; i++) await dashboard.tick();
    expect(summedHits(dashboard)).toBe(1);
    expect(dashboard.snapshot().instances['repeat#00d002']).toHaveLength(1);
    const lines = warnings.filter((w) => w.includes('"repeat#00d002"'));
    expect(lines).toHaveLength(1); // the second is counted by the throttle
    expect(lines[0]).toMatch(/dropped a dashboard frame.*not after.*last/);
  });

  it('at shutdown, the count of the dashboard warnings not logged yet is logged at once, by this app', async () => {
    const { app, dashboard, send, handled, warnings } = await dashboardApp();
    await dashboard.tick();
    const at = Date.now() - 30_000;
    for (let i = 0; i < 4; i++) await send(quietFrame('again#00d003', at)); // kept, then 3 drops: 1 logged, 2 counted
    await handled();
    expect(warnings.filter((w) => w.includes('"again#00d003"'))).toHaveLength(1);
    await app.close();
    expect(warnings.filter((w) => w.includes('2 more since the last warning'))).toEqual([
      'warnings: 2 more since the last warning, not logged one by one',
    ]);
  });

  it("this instance's clock steps back an hour: its next frame is still later, and its length is the real interval", async () => {
    await clearOfTheMinuteTick(15_000);
    const { dashboard, warnings } = await dashboardApp();
    const first = await dashboard.tick();
    await sleep(300);
    const second = await shifted(-3_600_000, () => dashboard.tick());
    expect(second.at).toBeGreaterThan(first.at);
    // the wall clock went back: the interval is measured on a monotonic clock (before: 1 ms, every rate × 300)
    expect(second.ms).toBeGreaterThanOrEqual(290);
    expect(dashboard.snapshot().instances[dashboard.instanceId]).toHaveLength(2);
    // its own frames are not "an instance whose clock runs ahead"
    expect(warnings.filter((w) => /clock/.test(w))).toEqual([]);
  });
});

describe('the names a frame carries', () => {
  const at = Date.now();
  const named = (n: number, from = 0) =>
    Object.fromEntries(Array.from({ length: n }, (_, i) => [`p${from + i}`, [1, 0] as [number, number]]));

  /*
   * Worst case, default history (120), 64 instances: 7,680 frames kept. Before, a frame's rateLimit and
   * rateLimitDegraded could each name 50 policies of 200 characters, 100 distinct names (27 KB of JSON): 268 MB of
   * heap measured (one-byte names; 429 MB two-byte). The collector counts a degraded decision under the same name as
   * the decision itself, so rateLimitDegraded's names are among rateLimit's: now required, 50 distinct names at most
   * (the strings are shared by both maps): 183 MB measured.
   */
  it('rateLimitDegraded names only policies of rateLimit: at most MAX_POLICIES distinct policy names a frame', () => {
    const full = quietFrame('full#00e001', at, {
      rateLimit: named(MAX_POLICIES),
      rateLimitDegraded: named(MAX_POLICIES),
    });
    expect(readDashboardFrame(full)).toEqual(full);
    const subset = quietFrame('subset#00e002', at, { rateLimit: named(3), rateLimitDegraded: named(2, 1) });
    expect(readDashboardFrame(subset)).toEqual(subset);
    const own = [
      quietFrame('own#00e003', at, { rateLimit: named(MAX_POLICIES), rateLimitDegraded: named(1, MAX_POLICIES) }),
      quietFrame('own#00e004', at, { rateLimit: {}, rateLimitDegraded: named(1) }),
      quietFrame('own#00e005', at, { rateLimit: named(2), rateLimitDegraded: named(MAX_POLICIES, 2) }),
    ];
    expect(own.map((f) => readDashboardFrame(f))).toEqual([undefined, undefined, undefined]);
  });

  it('over the channel: a frame whose degraded names are its own is dropped (logged), its peer with the subset kept', async () => {
    await clearOfTheMinuteTick(15_000);
    const { dashboard, send, handled, warnings } = await dashboardApp();
    const past = Date.now() - 30_000;
    await send(quietFrame('extra#00e006', past, { rateLimit: named(MAX_POLICIES), rateLimitDegraded: named(50, 50) }));
    await send(quietFrame('fits#00e007', past, { rateLimit: named(MAX_POLICIES), rateLimitDegraded: named(50) }));
    await handled();
    const kept = dashboard.snapshot().instances;
    expect(kept).not.toHaveProperty(['extra#00e006']);
    expect(Object.keys((kept['fits#00e007'] as DashboardFrame[])[0].rateLimitDegraded ?? {})).toHaveLength(50);
    expect(warnings.filter((w) => w.includes('not a dashboard frame'))).toHaveLength(1);
  });
});
