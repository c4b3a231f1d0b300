import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import {
  REDIS_CLIENT,
  RateLimitService,
  type RateLimitOptions,
  type RateLimitPolicy,
  type RateLimitResult,
} from '../../lib/index.js';
import type { RateLimitCheck } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { commandCalls as callsByCommand, sumCalls } from '../support/commandstats.js';
import { usePrivateRedis } from '../support/private-servers.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

afterAll(closeToolkitApps);

async function service(
  target: RedisTarget,
  rateLimit: RateLimitOptions,
  keyPrefix = `rtk-${randomUUID().slice(0, 8)}:`,
): Promise<RateLimitService> {
  const app = await createToolkitApp({ target, rateLimit, keyPrefix });
  return app.get(RateLimitService);
}

/** Calls per command since the server started, from INFO commandstats (the INFO calls themselves left out). */
async function commandCalls(client: RedisClient): Promise<number> {
  return sumCalls(await callsByCommand(client), (c) => c !== 'info');
}

describe('rateLimit.blockCache on a private server', () => {
  const redis = usePrivateRedis();

  it('answers a refused key with 0 Redis commands until its refusal ends; without it every call is a command', async () => {
    const target = { url: redis.server.url };
    const app = await createToolkitApp({ target, rateLimit: { blockCache: true } });
    const cached = app.get(RateLimitService);
    const plain = await service(target, {});
    const client = app.get<RedisClient>(REDIS_CLIENT);
    for (const rl of [cached, plain]) {
      const key = randomUUID();
      const policy: RateLimitPolicy = { limit: 2, ttl: 60_000, algorithm: 'fixed-window' };
      for (let i = 0; i < 2; i++) expect((await rl.consume(key, policy)).allowed).toBe(true);
      const first = await rl.consume(key, policy); // refused by Redis: the cache learns it
      expect(first.allowed).toBe(false);
      const before = await commandCalls(client);
      const answers: RateLimitResult[] = [];
      for (let i = 0; i < 100; i++) answers.push(await rl.consume(key, policy));
      answers.push(await rl.peek(key, policy));
      answers.push(...(await Promise.all(Array.from({ length: 50 }, () => rl.consume(key, policy)))));
      const used = (await commandCalls(client)) - before;
      expect(answers.every((a) => !a.allowed && a.remaining === 0)).toBe(true);
      expect(answers.every((a) => a.retryAfterMs > 50_000 && a.retryAfterMs <= first.retryAfterMs)).toBe(true);
      expect(answers.every((a) => a.limit === 2 && a.resetMs > 50_000)).toBe(true);
      if (rl === cached) {
        expect(used).toBe(0);
        expect(rl.stats()).toMatchObject({ denied: 151, deniedLocally: 150 });
      } else {
        expect(used).toBeGreaterThanOrEqual(100); // the batcher may join the 50 concurrent ones into fewer calls
        expect(rl.stats()).toMatchObject({ denied: 151, deniedLocally: 0 });
      }
    }
  });

  it('a refusal for a cost does not refuse a smaller cost; a larger one is refused locally', async () => {
    const rl = await service({ url: redis.server.url }, { blockCache: true });
    const key = randomUUID();
    const policy: RateLimitPolicy = { limit: 10, ttl: 60_000, algorithm: 'fixed-window' };
    expect((await rl.consume(key, { ...policy, cost: 7 })).allowed).toBe(true);
    expect((await rl.consume(key, { ...policy, cost: 5 })).allowed).toBe(false);
    expect((await rl.consume(key, { ...policy, cost: 6 })).allowed).toBe(false);
    expect(rl.stats().deniedLocally).toBe(1);
    const small = await rl.consume(key, { ...policy, cost: 3 });
    expect(small).toMatchObject({ allowed: true, remaining: 0 });
  });
});

describe.each(['single', 'cluster'] as const)('rateLimit.blockCache on %s', (target) => {
  let cached: RateLimitService;
  let plain: RateLimitService;
  /** Other instances (no cache) on the same counters as `cached` and as `plain`. */
  let cachedPeer: RateLimitService;
  let plainPeer: RateLimitService;
  beforeAll(async () => {
    const [a, b] = [`rtk-${randomUUID().slice(0, 8)}:`, `rtk-${randomUUID().slice(0, 8)}:`];
    cached = await service(target, { blockCache: { maxKeys: 1_000 } }, a);
    plain = await service(target, {}, b);
    cachedPeer = await service(target, {}, a);
    plainPeer = await service(target, {}, b);
  });

  it('reset() and reward() in this process readmit at once', async () => {
    const key = randomUUID();
    const policy: RateLimitPolicy = { limit: 1, ttl: 60_000 };
    expect((await cached.consume(key, policy)).allowed).toBe(true);
    expect((await cached.consume(key, policy)).allowed).toBe(false);
    expect((await cached.consume(key, policy)).allowed).toBe(false);
    await cached.reward(key, 1, policy);
    expect((await cached.consume(key, policy)).allowed).toBe(true);
    expect((await cached.consume(key, policy)).allowed).toBe(false);
    await cached.reset(key, policy);
    expect((await cached.consume(key, policy)).allowed).toBe(true);
    expect((await cached.consume(key, policy)).allowed).toBe(false);
    await cached.reset(key); // every counter of the key
    expect((await cached.consume(key, policy)).allowed).toBe(true);
  });

  it('a refusal in flight while reward() runs is not learnt: the next consume is what Redis says', async () => {
    const policy: RateLimitPolicy = { limit: 1, ttl: 60_000, algorithm: 'fixed-window' };
    const firsts: boolean[] = [];
    for (let i = 0; i < 20; i++) {
      const key = randomUUID();
      expect((await cached.consume(key, policy)).allowed).toBe(true);
      // the consume is sent first (i odd: a turn of the event loop later) or after the reward (the tick batcher)
      const consumed = cached.consume(key, policy);
      if (i % 2 === 1) await new Promise((resolve) => setImmediate(resolve));
      const [first] = await Promise.all([consumed, cached.reward(key, 1, policy)]);
      firsts.push(first.allowed);
      // refused, then the unit given back: admitted now; admitted after the refund: full now
      expect((await cached.consume(key, policy)).allowed).toBe(!first.allowed);
    }
    expect(firsts).toContain(false); // the in-flight refusal happened (the case under test)
  });

  it('a blockDuration policy beside a refused one is left to Redis, which blocks it when it is full', async () => {
    // tight refuses first (not full yet: no block for guarded); guarded fills up through another instance; while
    // tight is refused, Redis would block guarded for 30 s on the next decision. A cache answering that decision
    // would skip that block and admit the decision once tight's and guarded's windows have passed.
    const run = async (rl: RateLimitService, peer: RateLimitService) => {
      const key = randomUUID();
      const tight: RateLimitCheck = { key, name: 'tight', policy: { limit: 1, ttl: 1_200, algorithm: 'fixed-window' } };
      const guarded: RateLimitCheck = {
        key,
        name: 'guarded',
        scope: 'shared',
        policy: { limit: 2, ttl: 400, algorithm: 'fixed-window', blockDuration: 30_000 },
      };
      const outcomes: boolean[] = [];
      outcomes.push((await rl.consumeAll([tight, guarded])).allowed);
      outcomes.push((await rl.consumeAll([tight, guarded])).allowed);
      outcomes.push((await peer.consumeAll([{ ...guarded, name: 'other' }])).allowed);
      outcomes.push((await rl.consumeAll([tight, guarded])).allowed);
      await sleep(1_400);
      const last = await rl.consumeAll([tight, guarded]);
      outcomes.push(last.allowed);
      return { outcomes, retry: last.retryAfterMs };
    };
    const [withCache, without] = await Promise.all([run(cached, cachedPeer), run(plain, plainPeer)]);
    expect(without.outcomes).toEqual([true, false, true, false, false]);
    expect(withCache.outcomes).toEqual(without.outcomes);
    expect(withCache.retry).toBeGreaterThan(25_000);
  });

  it('interleaved with rewards, resets, blocks and several policies, it refuses exactly what Redis refuses', async () => {
    // The same random sequence runs against a service with the cache and one without, step by step. Windows and
    // blocks are long (nothing expires during the test), so the two must give the same answer at every step.
    let seed = 7;
    const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
    const suffix = randomUUID();
    const trackers = ['a', 'b', 'c'].map((t) => `${t}-${suffix}`);
    const policies: RateLimitPolicy[] = [
      { limit: 3, ttl: 60_000, algorithm: 'fixed-window' },
      { limit: 4, ttl: 60_000, algorithm: 'sliding-window' },
      { limit: 2, ttl: 600_000, algorithm: 'token-bucket', burst: 3 },
      { limit: 2, ttl: 60_000, algorithm: 'fixed-window', blockDuration: 60_000 },
      { limit: 5, ttl: 60_000, algorithm: 'sliding-window', blockDuration: 60_000 },
      // 85,714,285.7 µs per token: a reward must keep the TAT whole for the consumes after it
      { limit: 7, ttl: 600_000, algorithm: 'token-bucket' },
    ];
    const startLocal = cached.stats().deniedLocally;
    let refusals = 0;
    for (let step = 0; step < 500; step++) {
      const key = trackers[Math.floor(random() * trackers.length)];
      const roll = random();
      const p = policies[Math.floor(random() * policies.length)];
      if (roll < 0.05) {
        const points = 1 + Math.floor(random() * 2);
        await Promise.all([cached.reward(key, points, p), plain.reward(key, points, p)]);
      } else if (roll < 0.07) {
        await Promise.all([cached.reset(key), plain.reset(key)]);
      } else if (roll < 0.09) {
        await Promise.all([cached.reset(key, p), plain.reset(key, p)]);
      } else if (roll < 0.1) {
        await Promise.all([cached.block(key, 60_000, p), plain.block(key, 60_000, p)]);
      } else {
        const q = policies[(policies.indexOf(p) + 1 + Math.floor(random() * 3)) % policies.length];
        const checks: RateLimitCheck[] =
          roll < 0.5
            ? [{ key, policy: { ...p, cost: 1 + Math.floor(random() * 2) } }]
            : [
                { key, name: 'x', policy: p },
                { key, name: 'y', policy: q },
              ];
        const how = random();
        // some decisions are made by another instance (no cache) on the same counters
        const [x, y] = how < 0.25 ? [cachedPeer, plainPeer] : [cached, plain];
        const [a, b] =
          how > 0.9
            ? await Promise.all([x.peekAll(checks), y.peekAll(checks)])
            : await Promise.all([x.consumeAll(checks), y.consumeAll(checks)]);
        // the decision is the same; a policy refused by the cache is refused by Redis (in a local answer, the other
        // policies are reported as Redis last saw them: one may have filled up since)
        expect({ step, allowed: a.allowed }).toEqual({ step, allowed: b.allowed });
        a.results.forEach((r, i) => {
          if (!r.allowed) expect({ step, i, redis: b.results[i].allowed }).toEqual({ step, i, redis: false });
        });
        if (!a.allowed) refusals++;
      }
    }
    expect(refusals).toBeGreaterThan(100);
    expect(cached.stats().deniedLocally - startLocal).toBeGreaterThan(50);
  });

  it('answers only for the policy Redis refused: one scope with a per-request limit is asked of Redis', async () => {
    // a guard's counter is its scope (`Class.handler:name`): a per-request limit changes the policy, not the counter
    const scope = 'Ctrl.handler:default';
    const free: RateLimitPolicy = { limit: 2, ttl: 60_000, algorithm: 'fixed-window' };
    const premium: RateLimitPolicy = { limit: 1_000, ttl: 60_000, algorithm: 'fixed-window' };
    const key = randomUUID();
    const call = (policy: RateLimitPolicy) => cached.consumeAll([{ key, scope, policy }]);
    const start = cached.stats().deniedLocally;
    expect((await call(free)).allowed).toBe(true);
    expect((await call(free)).allowed).toBe(true);
    expect((await call(free)).allowed).toBe(false); // Redis refused: learnt
    expect((await call(free)).allowed).toBe(false); // answered here
    expect(cached.stats().deniedLocally - start).toBe(1);
    const admitted = await call(premium);
    expect(admitted).toMatchObject({ allowed: true, retryAfterMs: 0 });
    expect(admitted.results[0]).toMatchObject({ allowed: true, limit: 1_000, remaining: 997 });
    expect(cached.stats().deniedLocally - start).toBe(1);
  });

  it('policies of one counter that differ in limit, ttl, burst or blockDuration: the same answers as Redis', async () => {
    const scope = 'Ctrl.handler:default';
    const run = async (rl: RateLimitService, key: string, policies: RateLimitPolicy[]) => {
      const out: string[] = [];
      for (const policy of policies) {
        const d = await rl.consumeAll([{ key, scope, policy }]);
        out.push(`${d.allowed} ${d.results[0].remaining} ${d.results[0].limit}`);
      }
      return out;
    };
    const fixed = (limit: number, ttl = 60_000, blockDuration = 0): RateLimitPolicy => ({
      limit,
      ttl,
      algorithm: 'fixed-window',
      blockDuration,
    });
    const bucket = (burst: number): RateLimitPolicy => ({ limit: 2, ttl: 600_000, algorithm: 'token-bucket', burst });
    const sliding = (limit: number, ttl = 60_000): RateLimitPolicy => ({ limit, ttl, algorithm: 'sliding-window' });
    const sequences: RateLimitPolicy[][] = [
      [fixed(1), fixed(1), fixed(1), fixed(3), fixed(1), fixed(3), fixed(3), fixed(3), fixed(1), fixed(5)],
      // the ttl does not change a fixed window's counter either (nor its expiry, set when it was made)
      [fixed(1), fixed(1), fixed(1, 120_000), fixed(2, 120_000), fixed(2)],
      // the block Redis writes for a refusal of a blockDuration policy; none for the same counter's other policy
      [fixed(1), fixed(1), fixed(1, 60_000, 30_000), fixed(5), fixed(5, 60_000, 30_000), fixed(5)],
      [bucket(1), bucket(1), bucket(3), bucket(3), bucket(1), bucket(4)],
      [sliding(1), sliding(1), sliding(2), sliding(2, 120_000), sliding(3)],
    ];
    const start = cached.stats().deniedLocally;
    for (const policies of sequences) {
      const [a, b] = await Promise.all([run(cached, randomUUID(), policies), run(plain, randomUUID(), policies)]);
      expect(a).toEqual(b);
    }
    expect(cached.stats().deniedLocally - start).toBeGreaterThan(0); // the same policy again is still answered here
  });

  it('admits as soon as Redis does when a refusal runs out (polled in lockstep with a service without the cache)', async () => {
    const run = async (rl: RateLimitService, key: string, policy: RateLimitPolicy) => {
      expect((await rl.consume(key, policy)).allowed).toBe(true);
      expect((await rl.consume(key, policy)).allowed).toBe(false);
    };
    for (const algorithm of ['fixed-window', 'sliding-window', 'token-bucket'] as const) {
      const policy: RateLimitPolicy = { limit: 1, ttl: 500, algorithm };
      const [ka, kb] = [randomUUID(), randomUUID()];
      await Promise.all([run(cached, ka, policy), run(plain, kb, policy)]);
      const admittedAt: number[] = [-1, -1];
      for (let poll = 0; poll < 200 && admittedAt.includes(-1); poll++) {
        const [a, b] = await Promise.all([cached.consume(ka, policy), plain.consume(kb, policy)]);
        if (a.allowed && admittedAt[0] < 0) admittedAt[0] = poll;
        if (b.allowed && admittedAt[1] < 0) admittedAt[1] = poll;
        await sleep(10);
      }
      expect(admittedAt[0]).toBeGreaterThan(0);
      // the cache ends its refusal no later than Redis (it may poll Redis one step earlier)
      expect(admittedAt[0]).toBeLessThanOrEqual(admittedAt[1] + 1);
      expect(admittedAt[0]).toBeGreaterThanOrEqual(admittedAt[1] - 1);
    }
  });
});
