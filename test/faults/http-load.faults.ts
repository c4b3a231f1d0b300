/**
 * `npm run test:faults`: the sample app (dist/sample/main.js, a child process) under bounded HTTP load while its
 * Redis is SIGKILLed and restarted, paused, or cut off by the fault proxy (delays, resets, refused connects, a
 * blackhole). For every endpoint row and every scenario it checks:
 *  - the statuses: only the row's "degraded" statuses while Redis is away (cache and rate limit fail open → 200,
 *    sessions → 503, /health → 200 with status "down"), only healthy ones once it is back;
 *  - the wait: no request to an endpoint that touches Redis takes longer than commandTimeout + 100 ms (plus the
 *    p99 of the same request with no fault, which is the app's own work on a shared 2-core machine);
 *  - recovery: everything back within 2 s of Redis coming back, without restarting the app;
 *  - the app never crashes and never reports an unhandled rejection.
 * and prints the counts (requests sent, 2xx, 429, 503, other, max latency) per scenario.
 *
 * A row that cannot run — its endpoint answers 404, its `prepare()` throws, or it answers an unhealthy status with
 * Redis up — FAILS (one test per row, with the reason); the scenarios still run the rows that can.
 */
import { performance } from 'node:perf_hooks';
import { FaultProxy } from '../support/fault-proxy.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { formatReports, runLoad, type LoadReport, type LoadTarget, type Sample } from './harness/load.js';
import { httpGet, startSampleApp, type SampleApp } from './harness/sample-app.js';

const COMMAND_TIMEOUT = 500;
/** The bound on top of commandTimeout. */
const EXTRA_WAIT_MS = 100;
/** The recovery target (reconnect backoff is capped at maxReconnectDelay 1000 ms ± 20 %, so it has room). */
const RECOVERY_TARGET_MS = 2_000;

interface EndpointRow {
  name: string;
  path: string;
  feature: 'foundation' | 'cache' | 'rate-limit' | 'session';
  touchesRedis: boolean;
  /** Statuses allowed while Redis is fine. */
  healthy: number[];
  /** Statuses allowed while Redis is away. */
  degraded: number[];
  /** Something that must be seen while Redis is away (proves the fault reached the endpoint). */
  whileDown?: { status?: number; bodyStatus?: string };
  /** Headers for the load (e.g. a session cookie); a throw fails the row. */
  prepare?: (baseUrl: string) => Promise<Record<string, string>>;
}

/** The table: every row must be available on the built sample (see 'every endpoint row is available'). */
const ROWS: EndpointRow[] = [
  {
    name: 'GET / (static page)',
    path: '/',
    feature: 'foundation',
    touchesRedis: false,
    healthy: [200],
    degraded: [200],
  },
  {
    name: 'GET /health',
    path: '/health',
    feature: 'foundation',
    touchesRedis: true,
    healthy: [200],
    degraded: [200],
    whileDown: { bodyStatus: 'down' },
  },
  {
    // Cached (fail open: the loader serves while Redis is away) and rate-limited (fail open: no 429 while away).
    name: 'GET /products (cached, rate-limited)',
    path: '/products',
    feature: 'cache',
    touchesRedis: true,
    healthy: [200, 429],
    degraded: [200],
  },
  {
    name: 'GET /me (session)',
    path: '/me',
    feature: 'session',
    touchesRedis: true,
    healthy: [200],
    // 503 while Redis is away; 401 once it is back after a SIGKILL (no persistence: every session is gone).
    // Never 200: nobody passes as a user the app cannot check.
    degraded: [503, 401],
    whileDown: { status: 503 },
    prepare: async (baseUrl) => {
      const res = await fetch(`${baseUrl}/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ userId: 'proof-user', username: 'proof-user', password: 'proof' }),
      });
      if (res.status === 404) throw new Error('POST /auth/login answers 404: the sample has no login route');
      const cookie = res.headers
        .getSetCookie()
        .map((c) => c.split(';')[0])
        .join('; ');
      if (!cookie) throw new Error(`POST /auth/login answered ${res.status} without a session cookie`);
      return { cookie };
    },
  },
];

interface Scenario {
  name: string;
  /** 'direct': the app talks to Redis itself; 'proxied': through the fault proxy. */
  via: 'direct' | 'proxied';
  durationMs: number;
  faultAtMs: number;
  /** When the fault is healed (Redis back); recovery is measured from when this finishes. */
  healAtMs: number;
  inject: () => Promise<void> | void;
  heal: () => Promise<void> | void;
  /** Extra faults while it runs. */
  more?: { atMs: number; run: () => unknown }[];
  /** The link works part of the time (resets): statuses may be healthy or degraded throughout. */
  intermittent?: boolean;
}

// ---------------------------------------------------------------------------------------------------------------
// Setup at collection time (top-level await), so each unavailable row gets a failing test named after it.
// ---------------------------------------------------------------------------------------------------------------

const redis: RedisServerHandle = await startRedisServer();
const proxy = await FaultProxy.start({ port: redis.port });
let direct: SampleApp;
let proxied: SampleApp;
try {
  [direct, proxied] = await Promise.all([
    // Every scenario logs in afresh (a SIGKILL loses the sessions), more often than the sample's 5 logins a minute.
    startSampleApp({ redisUrl: redis.url, commandTimeout: COMMAND_TIMEOUT, env: { LOGIN_LIMIT_PER_MINUTE: '1000' } }),
    startSampleApp({ redisUrl: proxy.url, commandTimeout: COMMAND_TIMEOUT, env: { LOGIN_LIMIT_PER_MINUTE: '1000' } }),
  ]);
} catch (err) {
  await proxy.close();
  await redis.stop();
  throw err;
}

afterAll(async () => {
  await Promise.all([direct.stop(), proxied.stop()]);
  await proxy.close();
  await redis.stop();
});

/** Why a row cannot run (its endpoint 404s, its setup failed, or it is unhealthy), or undefined; plus its headers. */
async function probe(row: EndpointRow): Promise<{ broken?: string; headers?: Record<string, string> }> {
  let headers: Record<string, string> | undefined;
  try {
    headers = row.prepare ? await row.prepare(direct.baseUrl) : undefined;
  } catch (err) {
    return { broken: `prepare() threw: ${err instanceof Error ? err.message : String(err)}` };
  }
  const r = await httpGet(`${direct.baseUrl}${row.path}`, 5_000, headers);
  if (r.status === 404)
    return { broken: `GET ${row.path} answers 404: the ${row.feature} feature's route is missing from the sample` };
  if (!row.healthy.includes(r.status))
    return {
      broken: `GET ${row.path} answers ${r.status} with Redis up (expected ${row.healthy.join('/')})`,
    };
  return { headers };
}

const probed = await Promise.all(ROWS.map(async (row) => ({ row, ...(await probe(row)) })));
const active = probed.filter((p) => p.broken === undefined);
const broken = probed.filter((p) => p.broken !== undefined);

/**
 * Waits until the app's /health says "up" (the previous scenario's fault healed and the app reconnected): a scenario
 * starts from a healthy app, whatever the machine's load made the last recovery take. Bounded; throws if never.
 */
async function untilHealthy(app: SampleApp, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await httpGet(`${app.baseUrl}/health`, 5_000);
    if (r.status === 200 && (JSON.parse(r.body) as { status?: string }).status === 'up') return;
    if (Date.now() > deadline) throw new Error(`${app.baseUrl}/health not "up" within ${timeoutMs} ms: ${r.body}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The load targets: every active row, with headers prepared for this app now (a fresh session per scenario). */
async function targetsFor(app: SampleApp): Promise<LoadTarget[]> {
  await untilHealthy(app);
  return Promise.all(
    active.map(async ({ row }) => ({
      name: row.name,
      path: row.path,
      headers: row.prepare ? await row.prepare(app.baseUrl) : undefined,
    })),
  );
}

const printed: string[] = [];
afterAll(() => {
  const notes = broken.map((b) => `- FAILED ${b.row.name}: ${b.broken}`).join('\n');
  process.stdout.write(
    `\n### Fault suite counts (commandTimeout ${COMMAND_TIMEOUT} ms)\n\n${printed.join('\n\n')}\n\n${notes}\n`,
  );
});

// ---------------------------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------------------------

const baselineP99 = new Map<string, number>();

function samplesBetween(samples: Sample[], fromMs: number, toMs: number): Sample[] {
  return samples.filter((s) => s.at >= fromMs && s.at + s.latencyMs <= toMs);
}

/** ms from `healedAt` until /health said "up" for good (every later sample "up"); Infinity if never. */
function recoveryMs(health: LoadReport | undefined, healedAt: number): number {
  if (!health) return NaN;
  const after = health.samples.filter((s) => s.at >= healedAt);
  for (let i = 0; i < after.length; i++) {
    if (after.slice(i).every((s) => s.status === 200 && s.bodyStatus === 'up'))
      return after[i].at + after[i].latencyMs - healedAt;
  }
  return Infinity;
}

function describeScenario(scenario: Scenario): void {
  describe(scenario.name, () => {
    let reports: LoadReport[] = [];
    let healedAt = Infinity;
    let faultAt = Infinity;
    const app = (): SampleApp => (scenario.via === 'direct' ? direct : proxied);

    beforeAll(async () => {
      const started = performance.now();
      reports = await runLoad(
        app().baseUrl,
        await targetsFor(app()),
        {
          durationMs: scenario.durationMs,
          concurrency: 4,
          // Observe the whole recovery window after the heal even when the heal itself (a restart) was slow.
          runUntilMs: () => (Number.isFinite(healedAt) ? healedAt : scenario.healAtMs) + RECOVERY_TARGET_MS + 500,
        },
        [
          {
            atMs: scenario.faultAtMs,
            run: async () => {
              await scenario.inject();
              faultAt = performance.now() - started;
            },
          },
          {
            atMs: scenario.healAtMs,
            run: async () => {
              await scenario.heal();
              healedAt = performance.now() - started;
            },
          },
          ...(scenario.more ?? []),
        ],
      );
      printed.push(
        formatReports(
          `${scenario.name} (via ${scenario.via}; recovery ${recoveryMs(
            reports.find((r) => r.path === '/health'),
            healedAt,
          ).toFixed(0)} ms)`,
          reports,
        ),
      );
    }, scenario.durationMs + 30_000);

    afterAll(async () => {
      // Leave a clean link and a running server for the next scenario whatever happened.
      await proxy.restore();
      if (!redis.isRunning()) await redis.restart();
      proxy.resetAll();
      await Promise.all([untilHealthy(direct), untilHealthy(proxied)]);
    });

    it('answers only the degraded statuses while Redis is away, and what was expected did happen', () => {
      for (const { row } of active) {
        const report = reports.find((r) => r.name === row.name);
        expect(report).toBeDefined();
        if (scenario.intermittent) continue; // checked by the healthy-or-degraded rule below
        const down = samplesBetween(report?.samples ?? [], faultAt + 50, scenario.healAtMs);
        const unexpected = down.filter((s) => !row.degraded.includes(s.status));
        expect({ row: row.name, unexpected: unexpected.slice(0, 5) }).toEqual({ row: row.name, unexpected: [] });
        if (row.whileDown?.status !== undefined)
          expect(down.some((s) => s.status === row.whileDown?.status)).toBe(true);
        if (row.whileDown?.bodyStatus !== undefined)
          expect(down.some((s) => s.bodyStatus === row.whileDown?.bodyStatus)).toBe(true);
      }
      for (const { row } of active) {
        const report = reports.find((r) => r.name === row.name);
        // Before, during and after the outage only healthy or degraded statuses, never a 500 or a dropped connection.
        const allowed = new Set([...row.healthy, ...row.degraded]);
        const wrong = (report?.samples ?? []).filter((s) => !allowed.has(s.status));
        expect({ row: row.name, wrong: wrong.slice(0, 5) }).toEqual({ row: row.name, wrong: [] });
      }
    });

    it(`no request to an endpoint that touches Redis waits longer than commandTimeout + ${EXTRA_WAIT_MS} ms (+ its no-fault p99)`, () => {
      const violations: string[] = [];
      for (const { row } of active.filter((a) => a.row.touchesRedis)) {
        const report = reports.find((r) => r.name === row.name);
        const bound = COMMAND_TIMEOUT + EXTRA_WAIT_MS + (baselineP99.get(row.name) ?? 0);
        const max = report?.maxLatencyMs ?? Infinity;
        if (!(max <= bound)) violations.push(`${row.name}: waited ${max.toFixed(0)} ms > ${bound.toFixed(0)} ms`);
      }
      expect(violations).toEqual([]);
    });

    it(`is back within ${RECOVERY_TARGET_MS} ms of Redis coming back, without restarting the app`, () => {
      const ms = recoveryMs(
        reports.find((r) => r.path === '/health'),
        healedAt,
      );
      expect(ms).toBeLessThanOrEqual(RECOVERY_TARGET_MS);
    });

    it('the app never crashed and reported no unhandled rejection', () => {
      expect(app().alive()).toBe(true);
      expect(app().troubles()).toEqual([]);
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------------------------

describe('every endpoint row is available on the built sample (a broken row fails, it is never skipped)', () => {
  it.each(probed.map((p) => [p.row.name, p.broken] as const))('%s', (_name, why) => {
    expect(why).toBeUndefined();
  });
});

describe('no fault (baseline for the latency bound)', () => {
  it('every active row answers a healthy status under load on both apps', async () => {
    for (const app of [direct, proxied]) {
      const reports = await runLoad(app.baseUrl, await targetsFor(app), { durationMs: 1_500, concurrency: 4 });
      printed.push(formatReports(`no fault (via ${app === direct ? 'direct' : 'proxied'})`, reports));
      for (const { row } of active) {
        const report = reports.find((r) => r.name === row.name);
        expect(report?.sent).toBeGreaterThan(0);
        expect(report?.samples.filter((s) => !row.healthy.includes(s.status))).toEqual([]);
        baselineP99.set(row.name, Math.max(baselineP99.get(row.name) ?? 0, report?.p99LatencyMs ?? 0));
      }
    }
  });
});

describe('the built sample', () => {
  it('serves the notifications page at / (read from sample/public, found from the build)', async () => {
    const page = await httpGet(`${direct.baseUrl}/`);
    expect(page.status).toBe(200);
    expect(page.body).toContain('<title>nestjs-redis-toolkit · live notifications</title>');
  });
});

describeScenario({
  name: 'Redis SIGKILLed for 2 s, then restarted',
  via: 'direct',
  durationMs: 4_500,
  faultAtMs: 300,
  healAtMs: 2_300,
  inject: () => redis.kill(),
  heal: () => redis.restart(),
});

describeScenario({
  name: 'Redis paused (SIGSTOP) for 3 s',
  via: 'direct',
  durationMs: 5_500,
  faultAtMs: 300,
  healAtMs: 3_300,
  inject: () => redis.pause(),
  heal: () => redis.resume(),
});

describeScenario({
  name: `proxy delays every packet by ${COMMAND_TIMEOUT * 2} ms for 1.5 s`,
  via: 'proxied',
  durationMs: 3_500,
  faultAtMs: 300,
  healAtMs: 1_800,
  inject: () => proxy.delay(COMMAND_TIMEOUT * 2),
  heal: () => proxy.restore(),
});

describeScenario({
  name: 'proxy resets every connection every 250 ms for 1.5 s',
  via: 'proxied',
  durationMs: 3_500,
  faultAtMs: 300,
  healAtMs: 1_800,
  inject: () => proxy.resetAll(),
  heal: () => proxy.resetAll(),
  intermittent: true,
  more: [550, 800, 1_050, 1_300, 1_550].map((atMs) => ({ atMs, run: () => proxy.resetAll() })),
});

describeScenario({
  name: 'proxy refuses connections (server gone) for 1.5 s',
  via: 'proxied',
  durationMs: 3_500,
  faultAtMs: 300,
  healAtMs: 1_800,
  inject: () => proxy.refuse(),
  heal: () => proxy.restore(),
});

describeScenario({
  name: 'proxy blackholes all traffic for 1.5 s',
  via: 'proxied',
  durationMs: 4_000,
  faultAtMs: 300,
  healAtMs: 1_800,
  inject: () => proxy.blackhole(),
  heal: () => proxy.restore(),
});
