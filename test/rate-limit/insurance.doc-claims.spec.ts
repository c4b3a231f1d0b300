import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import {
  RateLimitService,
  RedisUnavailableError,
  type RateLimitOptions,
  type RateLimitPolicy,
} from '../../lib/index.js';
import { restoreClocks, shiftDateNow, useClockShift } from '../support/clock-shift.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { bootToolkitApp, useKillableRedis } from '../support/toolkit-boot.js';
import { waitFor } from '../support/wait.js';

// docs/rate-limit.md, Failure policy, `insurance`, held to the code where no other spec does, on a private server
// killed and restarted (empty, as the test servers keep no data):
// - it takes precedence over failOpen: false (module-wide and per call);
// - each process admits its share (divideLimitBy = the number of instances: together, the limit);
// - it starts a counter from what this process last learned from Redis for it (a process that never decided for it:
//   from nothing; until 2026-12-06 every process started from nothing), and what it admitted is not written to Redis:
//   once Redis answers again its figures (the policy's limit, a bucket's burst) are Redis's own;
// - its windows outlive Redis's return: a second outage in the same window goes on counting;
// - maxKeys drops the least recently used counter, which starts over;
// - a policy's blockDuration is applied by it (a refusal that hits the limit blocks the counter for blockDuration, in
//   this process; until 2026-12-06 the refusal lasted only until the window ended: insurance-block-refund.spec.ts);
// - reset(key) clears that key's windows only (reset(key, policy): that counter's), during an outage too, where it
//   throws. Fixed 2026-12-06: any reset() cleared every counter's window, so one reset (a login that succeeded, during
//   an outage where the reset itself failed) gave every client of the process a fresh share;
// - its windows do not move with this process's wall clock. Fixed 2026-12-06: they were timed with Date.now(): a step
//   back of an hour held a spent counter refused for an hour more (retryAfterMs 3,660,000 for a ttl of 60 s), a step
//   ahead ended every window at once (a fresh share for every counter).

afterAll(closeToolkitApps);
useClockShift();

const redis = useKillableRedis();

const WINDOW: RateLimitPolicy = { limit: 1, ttl: 60_000, algorithm: 'fixed-window' };
/** A policy of keys of their own, to see who decides (a peek: nothing charged, nothing counted). */
const PROBE: RateLimitPolicy = { limit: 1, ttl: 1_000 };

async function boot(rateLimit: RateLimitOptions, keyPrefix = `rtk-${randomUUID().slice(0, 8)}:`) {
  const app = await bootToolkitApp({
    target: { url: redis.server.url },
    commandTimeout: 300,
    maxReconnectDelay: 100,
    keyPrefix,
    rateLimit: { warnIntervalMs: 60_000, ...rateLimit },
  });
  return app.get(RateLimitService);
}

const decidedBy = async (rl: RateLimitService) => (await rl.peek(randomUUID(), PROBE)).degraded ?? 'redis';

/** Redis killed; resolves once every service's decisions are the insurance limiter's. */
async function cut(...services: RateLimitService[]) {
  await redis.server.kill();
  for (const rl of services)
    expect(await waitFor(async () => (await decidedBy(rl)) === 'insurance', 15_000)).toBe(true);
}

/** Redis restarted (empty); resolves once every service's decisions are Redis's again. */
async function back(...services: RateLimitService[]) {
  await redis.server.restart();
  for (const rl of services) expect(await waitFor(async () => (await decidedBy(rl)) === 'redis', 15_000)).toBe(true);
}

const say = (r: { allowed: boolean; degraded?: string }) => `${r.allowed ? 'admitted' : 'refused'} ${r.degraded}`;

it('takes precedence over failOpen: false, module-wide and per call: decided, never RedisUnavailableError', async () => {
  const rl = await boot({ failOpen: false, insurance: true });
  await cut(rl);
  const policy: RateLimitPolicy = { limit: 2, ttl: 60_000, algorithm: 'fixed-window' };
  const key = randomUUID();
  const answers = [
    await rl.consume(key, policy),
    await rl.consume(key, policy, { failOpen: false }),
    await rl.consumeAll([{ key, policy }], { failOpen: false }),
  ];
  expect(answers.map(say)).toEqual(['admitted insurance', 'admitted insurance', 'refused insurance']);
  expect(rl.stats()).toMatchObject({ insurance: 3, failedClosed: 0, failedOpen: 0, allowed: 0, denied: 0 });
});

it('each process admits its share; back from the restart, Redis decides with its own figures', async () => {
  const prefix = `rtk-${randomUUID().slice(0, 8)}:`;
  const [a, b] = await Promise.all([1, 2].map(() => boot({ insurance: { divideLimitBy: 2 } }, prefix)));
  const policy: RateLimitPolicy = { limit: 4, ttl: 60_000, algorithm: 'fixed-window' };
  const bucket: RateLimitPolicy = { limit: 2, ttl: 60_000, algorithm: 'token-bucket', burst: 8 };
  const key = randomUUID();
  // spent in Redis before the outage, through a: a's insurance starts from that answer, b's (it never decided for the
  // key) from nothing
  for (let i = 0; i < 4; i++) expect((await a.consume(key, policy)).allowed).toBe(true);
  expect((await a.consume(key, policy)).allowed).toBe(false);
  await cut(a, b);
  const admitted = async (rl: RateLimitService) => {
    const answers = [];
    for (let i = 0; i < 4; i++) answers.push(await rl.consume(key, policy));
    return answers.map((r) => `${r.allowed} ${r.limit} ${r.remaining}`);
  };
  const fresh = randomUUID();
  const admittedFresh = async (rl: RateLimitService) => {
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await rl.consume(fresh, policy));
    return answers.map((r) => `${r.allowed} ${r.limit} ${r.remaining}`);
  };
  // ceil(4 / 2) = 2 per process: 4 in all, as the limit
  expect([await admitted(a), await admitted(b), await admittedFresh(a), await admittedFresh(b)]).toEqual([
    ['false 2 0', 'false 2 0', 'false 2 0', 'false 2 0'],
    ['true 2 1', 'true 2 0', 'false 2 0', 'false 2 0'],
    ['true 2 1', 'true 2 0', 'false 2 0'],
    ['true 2 1', 'true 2 0', 'false 2 0'],
  ]);
  expect((await a.consume(randomUUID(), bucket)).limit).toBe(4); // ceil(burst 8 / 2)
  await back(a, b);
  // the restarted Redis holds nothing: the counter has its whole limit (what insurance admitted is not in it)
  const after = [await a.consume(key, policy), await b.consume(randomUUID(), bucket)];
  expect(after.map((r) => `${r.allowed} ${r.limit} ${r.remaining} ${r.degraded ?? 'redis'}`)).toEqual([
    'true 4 3 redis',
    'true 8 7 redis',
  ]);
});

it('its windows outlive Redis coming back: a second outage in the same window goes on counting', async () => {
  const rl = await boot({ insurance: true });
  const key = randomUUID();
  await cut(rl);
  expect(say(await rl.consume(key, WINDOW))).toBe('admitted insurance');
  expect(say(await rl.consume(key, WINDOW))).toBe('refused insurance');
  await back(rl);
  expect(say(await rl.consume(key, WINDOW))).toBe('admitted undefined'); // Redis's counter: fresh
  await redis.server.kill();
  expect(await waitFor(async () => (await decidedBy(rl)) === 'insurance', 15_000)).toBe(true);
  const again = await rl.consume(key, WINDOW);
  expect(say(again)).toBe('refused insurance');
  expect(again.retryAfterMs).toBeGreaterThan(30_000);
  expect(again.retryAfterMs).toBeLessThanOrEqual(60_000);
});

it('maxKeys: the least recently used counter is dropped, and starts over', async () => {
  const rl = await boot({ insurance: { maxKeys: 2 } });
  await cut(rl);
  const [a, b, c] = [randomUUID(), randomUUID(), randomUUID()];
  expect((await rl.consume(a, WINDOW)).allowed).toBe(true);
  expect((await rl.consume(b, WINDOW)).allowed).toBe(true);
  expect((await rl.consume(a, WINDOW)).allowed).toBe(false); // a is now the most recently used
  expect((await rl.consume(c, WINDOW)).allowed).toBe(true); // a third window: b's is dropped
  expect([(await rl.consume(a, WINDOW)).allowed, (await rl.consume(b, WINDOW)).allowed]).toEqual([false, true]);
});

it("a policy's blockDuration is applied: its refusal lasts blockDuration, past its window's end", async () => {
  const rl = await boot({ insurance: true });
  await cut(rl);
  const login: RateLimitPolicy = { limit: 1, ttl: 2_000, algorithm: 'fixed-window', blockDuration: 300_000 };
  const key = randomUUID();
  expect((await rl.consume(key, login)).allowed).toBe(true);
  const refused = await rl.consume(key, login);
  expect(say(refused)).toBe('refused insurance');
  expect(refused.retryAfterMs).toBeGreaterThan(290_000);
  expect(refused.retryAfterMs).toBeLessThanOrEqual(300_000);
});

it("during an outage, reset(key) clears that key's windows only (reset(key, policy): that counter's)", async () => {
  const rl = await boot({ insurance: true });
  await cut(rl);
  const other: RateLimitPolicy = { limit: 1, ttl: 60_000, algorithm: 'sliding-window' };
  const [a, b] = [randomUUID(), randomUUID()];
  for (const [key, policy] of [
    [a, WINDOW],
    [a, other],
    [b, WINDOW],
  ] as const)
    expect((await rl.consume(key, policy)).allowed).toBe(true);
  // the reset fails (Redis is down: thrown), the insurance window of that counter is cleared all the same
  await expect(rl.reset(a, WINDOW)).rejects.toBeInstanceOf(RedisUnavailableError);
  const afterOne = [await rl.peek(a, WINDOW), await rl.peek(a, other), await rl.peek(b, WINDOW)];
  expect(afterOne.map((r) => r.allowed)).toEqual([true, false, false]);
  await expect(rl.reset(b)).rejects.toBeInstanceOf(RedisUnavailableError);
  const afterKey = [await rl.peek(a, other), await rl.peek(b, WINDOW)];
  expect(afterKey.map((r) => r.allowed)).toEqual([false, true]);
});

it("a reset(key) made while Redis is up clears that key's windows only: the others hold in the next outage", async () => {
  const rl = await boot({ insurance: true });
  const [a, b] = [randomUUID(), randomUUID()];
  await cut(rl);
  for (const key of [a, b]) expect((await rl.consume(key, WINDOW)).allowed).toBe(true);
  await back(rl);
  await rl.reset(a);
  await redis.server.kill();
  expect(await waitFor(async () => (await decidedBy(rl)) === 'insurance', 15_000)).toBe(true);
  expect([(await rl.consume(a, WINDOW)).allowed, (await rl.consume(b, WINDOW)).allowed]).toEqual([true, false]);
});

it("its windows do not move with this process's wall clock (an hour back, an hour ahead)", async () => {
  const rl = await boot({ insurance: true });
  await cut(rl);
  const key = randomUUID();
  expect((await rl.consume(key, WINDOW)).allowed).toBe(true);
  const seen: string[] = [];
  for (const shift of [-3_600_000, 3_600_000]) {
    shiftDateNow(shift);
    const r = await rl.consume(key, WINDOW);
    seen.push(`${say(r)} ${r.retryAfterMs > 50_000 && r.retryAfterMs <= 60_000 ? 'within the ttl' : r.retryAfterMs}`);
    restoreClocks();
  }
  expect(seen).toEqual(['refused insurance within the ttl', 'refused insurance within the ttl']);
});
