import 'reflect-metadata';
import diagnosticsChannel from 'node:diagnostics_channel';
import { randomBytes } from 'node:crypto';
import { HealthCheckService, TerminusModule } from '@nestjs/terminus';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  type MetricData,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Redis } from 'ioredis';
import {
  CacheService,
  LockService,
  PubSubService,
  RateLimitService,
  RedisPermissionError,
  RedisReplyError,
  RedisUnavailableError,
  SessionService,
  type RateLimitPolicy,
} from '../../lib/index.js';
import { REDIS_TOOLKIT_CHANNELS, RedisConnection } from '../../lib/advanced.js';
import { hashSlot } from '../../lib/common/bulk-keys.js';
import { type DashboardFrame, DashboardService, RedisToolkitDashboardModule } from '../../lib/dashboard/index.js';
import { DASHBOARD_CHANNEL, type DashboardEvent } from '../../lib/dashboard/dashboard.service.js';
import { RedisToolkitInstrumentation } from '../../lib/otel/index.js';
import { RedisToolkitHealthIndicator } from '../../lib/terminus/index.js';
import { points, report } from '../support/observability.js';
import { trackForCleanup } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { startRedisCluster, type RedisClusterHandle } from '../support/redis-cluster.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { rawCommand } from '../support/resp.js';
import { within } from '../support/timing.js';
import { closeToolkitApps, createToolkitApp, type ToolkitAppOptions } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';
import { quietFrame } from '../support/dashboard-frames.js';

/**
 * An operator's view of an incident: every transport failure a feature lets through (or refuses) must be counted
 * once per call and logged (throttled, never lost), reply errors must never pass for an outage, the health indicator
 * must follow Redis down and up, and no signal (span, log line, dashboard frame) may leak a secret or be poisoned by
 * whoever can PUBLISH on the Redis. One private server (with an ACL user whose password is in the url) for the file,
 * paused, killed or ACL-changed by the tests; one private 3-master cluster for the cluster block.
 */

const COMMAND_TIMEOUT = 300;
const PASSWORD = 'pw-s3cret-xyz';
const policy: RateLimitPolicy = { limit: 5, ttl: 60_000 };

let server: RedisServerHandle;
beforeAll(async () => {
  server = trackForCleanup(await startRedisServer({ aclUser: { name: 'app', password: PASSWORD } }));
});
afterEach(async () => {
  await closeToolkitApps();
  if (!server.isRunning()) await server.restart();
  else server.resume();
});

const prefix = () => `rtk-oh-${randomBytes(3).toString('hex')}:`;

/** An app on the private server, its warnings and errors recorded. */
async function boot(extra: Omit<ToolkitAppOptions, 'logger'> = {}) {
  const rec = recordingLogger();
  const app = await createToolkitApp({
    target: { url: server.url },
    keyPrefix: prefix(),
    commandTimeout: COMMAND_TIMEOUT,
    maxReconnectDelay: 100,
    logger: rec.logger,
    ...extra,
  });
  return { app, ...rec };
}

/** The server's default user (no password): to plant foreign values and change the app user's ACL. */
const admin = () => trackForCleanup(new Redis({ port: server.port, username: 'default', lazyConnect: true }));

/** Collects what is published on a diagnostics channel until `stop()`. */
function listen<T = Record<string, unknown>>(name: string) {
  const got: T[] = [];
  const fn = (m: unknown) => void got.push(m as T);
  diagnosticsChannel.subscribe(name, fn);
  return { got, stop: () => diagnosticsChannel.unsubscribe(name, fn) };
}

/** The OTel instrumentation into in-memory exporters (enabled until `stop()`). */
function otel() {
  const spans = new InMemorySpanExporter();
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
  const instrumentation = new RedisToolkitInstrumentation({ enabled: false });
  instrumentation.setTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] }));
  instrumentation.setMeterProvider(new MeterProvider({ readers: [reader] }));
  instrumentation.enable();
  return {
    spans: (name: string) => spans.getFinishedSpans().filter((s) => s.name === name),
    exported: () =>
      JSON.stringify(
        spans
          .getFinishedSpans()
          .map((s) => ({ name: s.name, attributes: s.attributes, status: s.status, events: s.events })),
      ),
    metric: async (name: string): Promise<MetricData | undefined> => {
      await reader.forceFlush();
      for (const scope of exporter.getMetrics().at(-1)?.scopeMetrics ?? [])
        for (const m of scope.metrics) if (m.descriptor.name === name) return m;
      return undefined;
    },
    stop: async () => {
      instrumentation.disable();
      await reader.shutdown();
    },
  };
}

const sumOf = (values: Record<string, number>) => Object.values(values).reduce((a, b) => a + b, 0);

describe('rate limiting: fail-open is counted and logged, reply errors are not outages', () => {
  it('500 decisions of one tick against a paused Redis: each fails open within commandTimeout, counted once everywhere, one warning', async () => {
    const o = otel();
    const events = listen<{ outcome: string; degraded?: string }>(REDIS_TOOLKIT_CHANNELS.rateLimitDecision);
    try {
      const { app, warnings } = await boot();
      const rl = app.get(RateLimitService);
      await rl.consume('warm', policy);
      server.pause();
      const started = performance.now();
      const results = await Promise.all(Array.from({ length: 500 }, (_, i) => rl.consume(`client-${i % 50}`, policy)));
      const elapsed = performance.now() - started;
      server.resume();
      expect(elapsed).toBeLessThan(within(COMMAND_TIMEOUT));
      expect(results.filter((r) => r.allowed && r.degraded === 'fail-open')).toHaveLength(500);
      expect(rl.stats()).toMatchObject({ allowed: 1, denied: 0, failedOpen: 500, failedClosed: 0, replyErrors: 0 });
      // the batch failed as one EVALSHA; each of its callers is one event, one span, one metric point
      expect(events.got.filter((e) => e.degraded === 'fail-open' && e.outcome === 'allowed')).toHaveLength(500);
      expect(events.got).toHaveLength(501);
      const spans = o.spans('rtk.ratelimit.decision');
      expect(spans.filter((s) => s.attributes['rtk.degraded'] === 'fail-open')).toHaveLength(500);
      expect(spans).toHaveLength(501);
      expect(sumOf(points(await o.metric('rtk.ratelimit.decisions')))).toBe(501);
      // logged, throttled to one line for the burst
      const failOpenLines = warnings.filter((w) => /rate limiting decision failed.*allowing requests/.test(w));
      expect(failOpenLines).toHaveLength(1);
    } finally {
      events.stop();
      await o.stop();
    }
  });

  it('20,000 distinct trackers failing open (Redis killed): counted 20,000 times, one warning line naming no key', async () => {
    const { app, warnings } = await boot();
    const rl = app.get(RateLimitService);
    await rl.consume('warm', policy);
    await server.kill();
    for (let i = 0; i < 20; i++) {
      await Promise.all(Array.from({ length: 1_000 }, (_, j) => rl.consume(`hostile-${i}-${j}@example.com`, policy)));
    }
    expect(rl.stats()).toMatchObject({ failedOpen: 20_000, replyErrors: 0 });
    const lines = warnings.filter((w) => w.includes('rate limiting decision failed'));
    expect(lines).toHaveLength(1);
    expect(lines.join('\n')).not.toContain('hostile-');
  });

  it('a WRONGTYPE counter among 20 decisions of one tick fails only its own call: a reply error, never fail-open', async () => {
    const o = otel();
    try {
      const { app, warnings } = await boot();
      const rl = app.get(RateLimitService);
      const resolved = rl.resolvePolicy(policy, 'policy');
      const redis = admin();
      await redis.hset(rl.redisKey('planted', `${resolved.limit}/${resolved.ttl}`, resolved.algorithm), 'x', '1');
      const settled = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) => rl.consume(i === 7 ? 'planted' : `ok-${i}`, policy)),
      );
      const rejected = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
      expect(rejected).toHaveLength(1);
      expect(rejected[0].reason).toBeInstanceOf(RedisReplyError);
      expect((rejected[0].reason as RedisReplyError).replyCode).toBe('WRONGTYPE');
      expect(rl.stats()).toMatchObject({ allowed: 19, failedOpen: 0, failedClosed: 0, replyErrors: 1 });
      expect(warnings.filter((w) => w.includes('WRONGTYPE'))).toHaveLength(1);
      expect(warnings.filter((w) => w.includes('allowing requests'))).toEqual([]);
      const failed = o.spans('rtk.ratelimit.decision').filter((s) => s.status.code === 2);
      expect(failed.map((s) => s.attributes['rtk.outcome'])).toEqual(['failed']);
      expect(o.exported()).not.toContain('planted');
    } finally {
      await o.stop();
    }
  });

  /*
   * Was a bug, fixed (one throttle per reply code, lib/common/failure-policy.ts): a reply error of a new kind was not
   * logged when another reply error was logged within warnIntervalMs. Here a stray WRONGTYPE on one counter is
   * logged, then an ACL change takes EVALSHA away from the app's user: every decision now fails with
   * RedisPermissionError (HTTP 500 through the guard), counted in stats().replyErrors, and no line anywhere said
   * NOPERM (seen: warnings = [the WRONGTYPE line] only, replyErrors 6). DESIGN.md: a reply error "fails that one call
   * with a typed error and is logged"; docs/rate-limit.md: "counted in stats().replyErrors and logged". Cause: one
   * ThrottledWarning (`replyWarning`) for every reply error of a feature, whose `warn` dropped any message within the
   * interval whatever it said. Now ThrottledWarning throttles per kind (a bounded map) and the policy's kind is the
   * reply code, so the first of each kind is logged at once.
   */
  it('a NOPERM that starts after a logged WRONGTYPE is logged too, not swallowed by the throttle', async () => {
    const { app, warnings } = await boot({ rateLimit: { warnIntervalMs: 60_000 } });
    const rl = app.get(RateLimitService);
    const resolved = rl.resolvePolicy(policy, 'policy');
    const redis = admin();
    await redis.hset(rl.redisKey('planted', `${resolved.limit}/${resolved.ttl}`, resolved.algorithm), 'x', '1');
    await expect(rl.consume('planted', policy)).rejects.toBeInstanceOf(RedisReplyError);
    await redis.call('ACL', 'SETUSER', 'app', '-evalsha', '-eval');
    try {
      const denied = await Promise.all(
        Array.from({ length: 5 }, (_, i) => rl.consume(`user-${i}`, policy).catch((e: unknown) => e)),
      );
      expect(denied.every((e) => e instanceof RedisPermissionError)).toBe(true);
      expect(rl.stats()).toMatchObject({ failedOpen: 0, replyErrors: 6 });
    } finally {
      await redis.call('ACL', 'SETUSER', 'app', '+@all');
    }
    expect(warnings.filter((w) => w.includes('WRONGTYPE'))).toHaveLength(1);
    expect(warnings.filter((w) => w.includes('NOPERM'))).not.toEqual([]);
  });

  /*
   * Was a bug, fixed (lib/common/throttled-logger.ts): the warnings a burst suppressed were never logged when the
   * outage ended within warnIntervalMs. 50 decisions fail open on a killed Redis (stats().failedOpen 50), one line is
   * logged, Redis comes back: 1.5 s later (warnIntervalMs 300) the log still had that single line and nothing ever
   * said 49 more were let through; the count would only be appended to the first warning of the NEXT outage (maybe
   * days later, misattributing it). docs/rate-limit.md: "one warning is logged per warnIntervalMs (10 s) with the
   * count of suppressed ones"; docs/cache.md: "(with the count of the ones not logged)". Now the first suppressed
   * warning arms one unref'd timer for the end of the interval, which logs "<what>: N more since the last warning".
   */
  it('after a short outage the number of suppressed fail-open warnings is logged once the interval passes', async () => {
    const { app, warnings } = await boot({ rateLimit: { warnIntervalMs: 300 } });
    const rl = app.get(RateLimitService);
    await rl.consume('warm', policy);
    await server.kill();
    await Promise.all(Array.from({ length: 50 }, (_, i) => rl.consume(`client-${i}`, policy)));
    expect(rl.stats().failedOpen).toBe(50);
    await server.restart();
    await sleep(1_500);
    await rl.consume('warm', policy);
    expect(warnings.filter((w) => w.includes('allowing requests'))).toHaveLength(1);
    expect(warnings.some((w) => /\b49\b/.test(w))).toBe(true);
    expect(warnings.filter((w) => w.includes('49 more since the last warning'))).toEqual([
      'failed rate limiting calls (Redis unavailable): 49 more since the last warning, not logged one by one',
    ]);
  });

  it('single server: a consumeAll of two trackers that fails open is one decision, counted once', async () => {
    const { app } = await boot();
    const rl = app.get(RateLimitService);
    await rl.consume('warm', policy);
    await server.kill();
    const decision = await rl.consumeAll([
      { key: 'ip:203.0.113.7', policy, name: 'ip' },
      { key: 'user:42', policy, name: 'user' },
    ]);
    expect(decision).toMatchObject({ allowed: true, degraded: 'fail-open' });
    expect(rl.stats()).toMatchObject({ allowed: 1, denied: 0, failedOpen: 1 });
  });
});

describe('rate limiting on a cluster with a master killed', () => {
  let cluster: RedisClusterHandle;
  beforeAll(async () => {
    cluster = trackForCleanup(await startRedisCluster());
  }, 60_000);

  /** A cluster app, and keys by the master that owns their counter. */
  async function clusterApp() {
    const app = await createToolkitApp({
      target: { cluster: cluster.startupNodes },
      keyPrefix: prefix(),
      commandTimeout: 500,
      maxReconnectDelay: 100,
    });
    const rl = app.get(RateLimitService);
    const resolved = rl.resolvePolicy(policy, 'policy');
    const slots = (await rawCommand(cluster.masters[0].port, ['CLUSTER', 'SLOTS'])) as [
      number,
      number,
      [string, number],
    ][];
    const portOf = (key: string) => {
      const slot = hashSlot(rl.redisKey(key, `${resolved.limit}/${resolved.ttl}`, resolved.algorithm));
      return slots.find(([from, to]) => slot >= from && slot <= to)?.[2][1];
    };
    const keys = Array.from({ length: 200 }, (_, i) => `tracker-${i}`);
    const on = (master: RedisServerHandle) => keys.filter((k) => portOf(k) === master.port);
    return { rl, on };
  }

  /**
   * Restarts a killed master, then waits for every master to say cluster_state:ok: a restarted master says fail for
   * about 2 s, and an app booted then (the next test's) did not connect within its 5.5 s.
   */
  async function restore(victim: RedisServerHandle) {
    await victim.restart();
    const ok = async () => {
      const infos = await Promise.all(cluster.masters.map((m) => rawCommand(m.port, ['CLUSTER', 'INFO'])));
      return infos.every((info) => /cluster_state:ok/.test(String(info)));
    };
    expect(await waitFor(ok, 10_000)).toBe(true);
  }

  /*
   * Fixed 2026-12-05 (was it.failing): on a cluster, one consumeAll whose trackers failed open was counted once per
   * tracker in stats().failedOpen: two trackers on a killed master gave failedOpen +2 for one decision, where the same
   * call on one server counts 1 (test above) and a successful one allowed +1; a guard with a per-IP and a per-user
   * policy doubled the fail-open count of every request in an outage (insurance likewise). The fallback
   * (lib/rate-limit/rate-limit.fallback.ts), run once per tracker's script call, counted; now RateLimitService.count
   * does, once per decision. Its event, span and metric points agree: one each (a point per policy).
   */
  it('a consumeAll of two trackers on the dead master is one fail-open decision, counted once', async () => {
    const { rl, on } = await clusterApp();
    const victim = cluster.masters[0];
    const [a, b] = on(victim);
    await victim.kill();
    const o = otel();
    const events = listen<{ outcome: string; degraded?: string }>(REDIS_TOOLKIT_CHANNELS.rateLimitDecision);
    try {
      const decision = await rl.consumeAll([
        { key: a, policy, name: 'ip' },
        { key: b, policy, name: 'user' },
      ]);
      expect(decision).toMatchObject({ allowed: true, degraded: 'fail-open' });
      expect(rl.stats()).toMatchObject({ allowed: 0, denied: 0, failedOpen: 1 });
      expect(events.got).toMatchObject([{ outcome: 'allowed', degraded: 'fail-open' }]);
      const spans = o.spans('rtk.ratelimit.decision');
      expect(spans.map((s) => [s.attributes['rtk.outcome'], s.attributes['rtk.degraded']])).toEqual([
        ['allowed', 'fail-open'],
      ]);
      expect(points(await o.metric('rtk.ratelimit.decisions'))).toEqual({
        'outcome=allowed,policy=ip,rtk.degraded=fail-open': 1,
        'outcome=allowed,policy=user,rtk.degraded=fail-open': 1,
      });
    } finally {
      events.stop();
      await o.stop();
      await restore(victim);
    }
  });

  /*
   * Fixed 2026-12-05 (was it.failing): on a cluster, a consumeAll whose first tracker failed open and whose second was
   * refused by Redis was refused (the guard answers 429) but counted in stats().failedOpen, not in denied (failedOpen
   * +1, denied +0), and said degraded: 'fail-open'. RateLimitService.count returned early on any degraded outcome, and
   * the fallback had counted the group as failed open. Now the refusal decides: Redis's refusal is denied +1, with no
   * degraded on the decision, its event, span or metric points.
   */
  it('a decision refused by a live tracker after another failed open is counted as denied, not as failed open', async () => {
    const { rl, on } = await clusterApp();
    const victim = cluster.masters[0];
    const dead = on(victim)[0];
    const live = on(cluster.masters[1])[0];
    for (let i = 0; i < policy.limit; i++) await rl.consume(live, policy);
    const before = rl.stats();
    await victim.kill();
    const o = otel();
    const events = listen<{ outcome: string; degraded?: string }>(REDIS_TOOLKIT_CHANNELS.rateLimitDecision);
    try {
      const decision = await rl.consumeAll([
        { key: dead, policy, name: 'ip' },
        { key: live, policy, name: 'user' },
      ]);
      expect(decision.allowed).toBe(false);
      expect(decision.degraded).toBeUndefined();
      const after = rl.stats();
      expect({ failedOpen: after.failedOpen - before.failedOpen, denied: after.denied - before.denied }).toEqual({
        failedOpen: 0,
        denied: 1,
      });
      expect(events.got).toHaveLength(1);
      expect(events.got[0]).toMatchObject({ outcome: 'refused' });
      expect(events.got[0].degraded).toBeUndefined();
      const spans = o.spans('rtk.ratelimit.decision');
      expect(spans.map((s) => [s.attributes['rtk.outcome'], s.attributes['rtk.degraded']])).toEqual([
        ['refused', undefined],
      ]);
      expect(points(await o.metric('rtk.ratelimit.decisions'))).toEqual({
        'outcome=refused,policy=ip': 1,
        'outcome=refused,policy=user': 1,
      });
    } finally {
      events.stop();
      await o.stop();
      await restore(victim);
    }
  });
});

describe('cache, sessions, locks, pub/sub: each failed call counted and logged, no secret in any signal', () => {
  it('cache: 500 distinct keys read against a paused Redis: 500 loader fallbacks, 500 errors, 500 events, one warning', async () => {
    const gets = listen<{ outcome: string }>(REDIS_TOOLKIT_CHANNELS.cacheGet);
    try {
      const { app, warnings } = await boot();
      const cache = app.get(CacheService);
      await cache.getOrSet('warm', async () => 0);
      const before = cache.stats();
      server.pause();
      let loads = 0;
      const started = performance.now();
      const values = await Promise.all(
        Array.from({ length: 500 }, (_, i) => cache.getOrSet(`key-${i}`, async () => (loads++, i))),
      );
      expect(performance.now() - started).toBeLessThan(within(COMMAND_TIMEOUT));
      server.resume();
      expect(values).toEqual(Array.from({ length: 500 }, (_, i) => i));
      expect(loads).toBe(500);
      const after = cache.stats();
      expect({ errors: after.errors - before.errors, misses: after.misses - before.misses }).toEqual({
        errors: 500,
        misses: 500,
      });
      expect(gets.got.slice(-500).every((e) => e.outcome === 'miss')).toBe(true);
      expect(gets.got).toHaveLength(501);
      expect(warnings.filter((w) => w.includes('serving without the cache'))).toHaveLength(1);
    } finally {
      gets.stop();
    }
  });

  it('sessions and locks on a paused Redis: each failure counted, logged, its span ERROR; no session id or password anywhere', async () => {
    const o = otel();
    try {
      const { app, warnings, errors } = await boot({ session: { cookie: { secret: 'cookie-s3cret-abc' } } });
      const sessions = app.get(SessionService);
      const locks = app.get(LockService);
      const s = await sessions.create('user-1');
      // create settles the id in the user's index in the background (a ZREM sent before it resolves): a PING on the
      // same connection answers after it, so that call cannot fail on the paused server and count a fourth failure
      // (it did once in CI: unavailable 4)
      await app.get(RedisConnection).client.ping();
      const cookie = sessions.signedCookieValue(s.id);
      server.pause();
      const failures = [
        await sessions.create('user-2').catch((e: unknown) => e),
        await sessions.get(s.id).catch((e: unknown) => e),
        await sessions.destroy(s.id).catch((e: unknown) => e),
        await locks.acquire('report', { ttl: 1_000, waitMs: 1_000 }).catch((e: unknown) => e),
      ];
      server.resume();
      expect(failures.map((e) => e instanceof RedisUnavailableError)).toEqual([true, true, true, true]);
      expect(sessions.stats()).toEqual({ unavailable: 3, replyErrors: 0 });
      expect(locks.stats()).toEqual({ unavailable: 1, replyErrors: 0 });
      expect(warnings.some((w) => w.startsWith('session '))).toBe(true);
      expect(warnings.some((w) => w.startsWith('lock acquire on "report" failed'))).toBe(true);
      const failed = (name: string) => o.spans(name).filter((x) => x.status.code === 2).length;
      expect([failed('rtk.session.create'), failed('rtk.session.destroy'), failed('rtk.lock.acquire')]).toEqual([
        1, 1, 1,
      ]);
      const everything = [o.exported(), ...warnings, ...errors, ...failures.map(String)].join('\n');
      for (const secret of [s.id, cookie, PASSWORD]) expect(everything).not.toContain(secret);
    } finally {
      await o.stop();
    }
  });

  /*
   * Was a bug, fixed (lib/pubsub/pubsub.traced-error.ts): a notifyUser that fails (Redis down) put the user id into
   * its span: status message and exception event `pub/sub publish to user:alice@example.com failed: ...` (seen,
   * exported by the in-memory span exporter). docs/observability.md: "Channel payloads carry no channel name either
   * (a `user:<id>` channel names a user)", and lib/pubsub/pubsub.service.ts keeps the channel out of the traced
   * context for that reason, yet the context's `error` carried it and lib/otel/redis-toolkit.instrumentation.ts
   * `finish` exports its message. Now the traced call gets a copy of the error whose message names no channel
   * (`pub/sub publish failed: ...`); the caller's error still names it, as docs/pubsub.md shows.
   */
  it('a failed notifyUser span does not carry the user id', async () => {
    const o = otel();
    try {
      const { app } = await boot();
      const pubsub = app.get(PubSubService);
      await pubsub.publish('warm', 1);
      await server.kill();
      const err = await pubsub.notifyUser('alice@example.com', { hi: 1 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RedisUnavailableError);
      expect((err as Error).message).toContain('pub/sub publish to user:alice@example.com failed: ');
      const failed = o.spans('rtk.pubsub.publish').filter((x) => x.status.code === 2);
      expect(failed).toHaveLength(1);
      expect(failed[0].status.message).toMatch(/^pub\/sub publish failed: /);
      expect(o.exported()).not.toContain('alice@example.com');
    } finally {
      await o.stop();
    }
  });

  it('pub/sub: 100 publishes of one tick against a paused Redis each fail, counted and published as failed; a foreign unreadable message is dropped, its content not logged', async () => {
    const published = listen<{ outcome: string }>(REDIS_TOOLKIT_CHANNELS.pubsubPublish);
    const drops = listen<{ reason: string }>(REDIS_TOOLKIT_CHANNELS.pubsubDrop);
    try {
      const { app, warnings, errors } = await boot();
      const pubsub = app.get(PubSubService);
      const received: unknown[] = [];
      await pubsub.subscribe('news', (m) => void received.push(m));
      const keyPrefix = (app.get(PubSubService) as unknown as { channelPrefix: string }).channelPrefix;
      await admin().publish(`${keyPrefix}news`, '{"password":"hunter2-secret", broken');
      expect(await waitFor(() => drops.got.length === 1, 5_000)).toBe(true);
      expect(drops.got[0].reason).toBe('unreadable');
      expect(received).toEqual([]);
      server.pause();
      const settled = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => pubsub.publish('news', { i })));
      server.resume();
      expect(settled.filter((r) => r.status === 'rejected' && r.reason instanceof RedisUnavailableError)).toHaveLength(
        100,
      );
      expect(pubsub.stats()).toEqual({ unavailable: 100, replyErrors: 0 });
      expect(published.got.filter((e) => e.outcome === 'failed')).toHaveLength(100);
      expect(warnings.filter((w) => w.includes('pub/sub publish to news failed'))).toHaveLength(1);
      expect(warnings.filter((w) => w.includes('could not be read'))).toHaveLength(1);
      expect([...warnings, ...errors].join('\n')).not.toContain('hunter2');
    } finally {
      published.stop();
      drops.stop();
    }
  });

  it('terminus: down within commandTimeout while Redis is paused, up again soon after it resumes', async () => {
    const { app } = await boot({ imports: [TerminusModule], providers: [RedisToolkitHealthIndicator] });
    const terminus = app.get(HealthCheckService);
    const indicator = app.get(RedisToolkitHealthIndicator);
    const check = () => report(() => terminus.check([() => indicator.isHealthy('redis')]));
    expect((await check()).status).toBe('ok');
    server.pause();
    const started = performance.now();
    const down = await check();
    expect(performance.now() - started).toBeLessThan(within(COMMAND_TIMEOUT));
    expect((down.details.redis as { status: string }).status).toBe('down');
    expect(JSON.stringify(down)).not.toContain(PASSWORD);
    server.resume();
    expect(await waitFor(async () => (await check()).status === 'ok', 5_000)).toBe(true);
  });
});

describe('the dashboard under hostile frames, clock skew and an outage', () => {
  /** A frame as another instance makes it, every count 0. */
  const frameOf = (instance: string, at: number): DashboardFrame => quietFrame(instance, at);

  async function dashboardApp() {
    const booted = await boot({
      imports: [RedisToolkitDashboardModule.register({ unsafeNoAuth: true, intervalMs: 60_000 })],
    });
    const dashboard = booted.app.get(DashboardService);
    const channel = `${(booted.app.get(PubSubService) as unknown as { channelPrefix: string }).channelPrefix}${DASHBOARD_CHANNEL}`;
    const redis = admin();
    // a plain PUBLISH from another client, as anyone who may PUBLISH on the Redis can send
    const send = (message: unknown) =>
      redis.publish(channel, typeof message === 'string' ? message : JSON.stringify(message));
    return { ...booted, dashboard, send };
  }

  /** Waits until at least `ms` remain before the wall-clock minute, where the app's own one-minute timer ticks. */
  async function clearOfTheMinuteTick(ms: number): Promise<void> {
    const left = 60_000 - (Date.now() % 60_000);
    if (left < ms) await sleep(left + 100);
  }

  it('garbage, huge non-frames and 1,000 distinct misfits on the channel: dropped, bounded, one warning, the next frame still summed', async () => {
    const { dashboard, send, warnings } = await dashboardApp();
    await dashboard.tick();
    await send('not json at all');
    await send(JSON.stringify({ v: 1, junk: 'x'.repeat(5_000_000) }));
    for (let i = 0; i < 1_000; i++) await send({ v: 1, instance: `misfit-${i}#00000a`, at: Date.now(), cache: null });
    const peer = { ...frameOf('peer#0000cc', Date.now() - 40_000), cache: { ...frameOf('', 0).cache, hits: 7 } };
    await send(peer);
    expect(await waitFor(() => 'peer#0000cc' in dashboard.snapshot().instances, 10_000)).toBe(true);
    await dashboard.tick();
    expect(dashboard.snapshot().sum.reduce((n, s) => n + s.cache.hits, 0)).toBe(7);
    expect(Object.keys(dashboard.snapshot().instances).sort()).toEqual([dashboard.instanceId, 'peer#0000cc'].sort());
    expect(JSON.stringify(dashboard.snapshot()).length).toBeLessThan(20_000);
    const dropped = warnings.filter((w) => w.includes('dropped a message'));
    expect(dropped.length).toBeGreaterThanOrEqual(1);
    expect(dropped.length).toBeLessThanOrEqual(2); // the dashboard's and pub/sub's throttled line
    expect(warnings.join('\n')).not.toContain('xxxxxxxxxx');
  });

  /*
   * Fixed 2026-12-05 (was it.failing): a frame with every documented field right plus an extra one (or an extra
   * inside a section) passed isDashboardFrame and was kept whole: `history` copies per instance, up to 64 instances,
   * and sent to every page. One 1 MB-padded frame from another client made the snapshot 1,001,290 characters long
   * (64 × 120 such frames would hold 7.7 GB, and each 1 MB `frame` event overflows a page's 256 KB stream buffer,
   * which disconnects it). Now lib/dashboard/dashboard.frame.ts `readDashboardFrame` rebuilds a frame from its known
   * fields before it is kept (rebuilt, not refused: a newer release's frame with a field added is still summed).
   */
  it('a frame padded with an extra field is neither kept nor sent to pages whole: memory stays bounded', async () => {
    const { dashboard, send } = await dashboardApp();
    await dashboard.tick();
    const largest: number[] = [];
    const stop = dashboard.watch((event: DashboardEvent) => void largest.push(JSON.stringify(event).length));
    try {
      const at = Date.now() - 40_000;
      const pad = 'x'.repeat(1_000_000);
      await send({ ...frameOf('padded#0000aa', at), pad });
      const inner = frameOf('padded-inner#0000ab', at);
      await send({ ...inner, cache: { ...inner.cache, pad } });
      await send(frameOf('marker#0000ff', at));
      expect(await waitFor(() => 'marker#0000ff' in dashboard.snapshot().instances, 10_000)).toBe(true);
      expect(JSON.stringify(dashboard.snapshot()).length).toBeLessThan(20_000);
      expect(Math.max(0, ...largest)).toBeLessThan(20_000);
    } finally {
      stop?.();
    }
  });

  /*
   * Fixed 2026-12-05 (was it.failing): frames of an instance whose clock runs ahead waited in the aggregator's
   * `pending` list until the local clock reached them, and `pending` was capped at 256 (MAX_INSTANCES × 4): once an
   * instance 5 minutes ahead (intervalMs 1 s) had sent 256 frames, every other instance's frames, this one's own
   * included, were dropped from the sums (counted in `dropped`, never logged). Here the skewed instance's 260 frames
   * come at once (one interval apart, an hour ahead), then a peer's frame of the last interval with 7 cache hits: no
   * sum had them (every sum 0 hits, 0 instances). Now lib/dashboard/dashboard.aggregator.ts sums a frame at the
   * latest at the second tick after it arrived, whatever its `at`, keeps at most 8 unsummed frames per instance (the
   * rest of this burst is dropped, logged), and logs a clock ahead (test/dashboard/dashboard-degraded.spec.ts).
   */
  it("an instance whose clock runs ahead does not push the other instances' frames out of the sums", async () => {
    const { dashboard, send } = await dashboardApp();
    await dashboard.tick();
    const ahead = Date.now() + 3_600_000;
    for (let i = 0; i < 260; i++) await send(frameOf('skewed#0000bb', ahead + i * 1_000));
    const peer = { ...frameOf('peer#0000cc', Date.now() - 40_000), cache: { ...frameOf('', 0).cache, hits: 7 } };
    await send(peer);
    expect(await waitFor(() => 'peer#0000cc' in dashboard.snapshot().instances, 10_000)).toBe(true);
    await dashboard.tick();
    expect(dashboard.snapshot().sum.reduce((n, s) => n + s.cache.hits, 0)).toBe(7);
  });

  /*
   * Fixed 2026-12-05 (was it.failing): the dashboard's own frame that could not be published (Redis down) was counted
   * as the app's pub/sub failure: with Redis killed and the app publishing nothing, the next frame said { published:
   * 0, failed: 1 }, one more per interval of the outage. The collector subtracted own frames from `published` only,
   * and only after a successful publish; now DashboardService.tick tells it the outcome (`countOwnPublish('sent' |
   * 'failed')`, failed for RedisUnavailableError) and it is taken out of that count.
   */
  it("the dashboard's own failed frame publish is not counted as the app's pub/sub failure", async () => {
    const { dashboard } = await dashboardApp();
    await clearOfTheMinuteTick(5_000);
    await dashboard.tick();
    await server.kill();
    await dashboard.tick(); // its frame's publish fails
    const frame = await dashboard.tick();
    expect(frame.pubsub).toEqual({ published: 0, failed: 0 });
  });
});
