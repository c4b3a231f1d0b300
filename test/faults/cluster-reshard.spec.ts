/**
 * Every feature while a slot of a Redis Cluster moves to another master (`redis-cli --cluster reshard`): the slot's
 * keys are split between the two nodes (ASK for a moved key, TRYAGAIN for a script whose keys are split), then the slot
 * belongs to the target (MOVED from the source). The calls of each feature on keys of that slot give the values and the
 * counts they give on a still cluster, no error a retry would have answered reaches a caller, no rejection is left
 * unhandled, and the per-master batches follow the new owner once the slot moved.
 *
 * The slot moves on a private cluster (useDisposableCluster), key by key with real commands (test/support/reshard.ts).
 */
import 'reflect-metadata';
import { Cluster, type Redis } from 'ioredis';
import { CacheService, LockService, PubSubService, RateLimitService, SessionService } from '../../lib/index.js';
import { hashSlot } from '../../lib/common/bulk-keys.js';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import {
  fillSlot,
  fillerKeys,
  keyInSlot,
  keysInSlot,
  reshardApp,
  slotMigration,
  type SlotMigration,
} from '../support/reshard.js';
import { rawCommand } from '../support/resp.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { countUnhandledRejectionsInFile, settleRejections } from '../support/unhandled.js';
import { sleep, waitFor } from '../support/wait.js';

const cluster = useDisposableCluster();
const rejections = countUnhandledRejectionsInFile();
afterEach(closeToolkitApps);
afterEach(async () => {
  await settleRejections();
  expect(rejections.reasons).toEqual([]);
});

const DAY = 86_400_000;
/** Slots the cases move, one each (apart from one another and from the slots of the other cases' keys). */
let nextSlot = 1_000;
const freshSlot = (): number => (nextSlot += 997) % 16_384;

const app = (extra: Record<string, unknown> = {}) => reshardApp(cluster(), 'rs', extra);

const fill = (migration: SlotMigration, count = 24): Promise<void> => fillSlot(migration, count, DAY);

/** The keys of `slot` on each side of the migration. */
async function sides(migration: SlotMigration): Promise<{ source: string[]; target: string[] }> {
  return { source: await migration.keysOn(migration.source), target: await migration.keysOn(migration.target) };
}

/**
 * Records, per master port, the commands the cluster client's own master connections send while `fn` runs (the
 * per-master batches, and each command alone through the cluster client).
 */
async function perPort<T>(client: Cluster, fn: () => Promise<T>): Promise<{ value: T; sent: Map<number, string[]> }> {
  const sent = new Map<number, string[]>();
  const restores = client.nodes('master').map((node: Redis) => {
    const send = node.sendCommand.bind(node);
    const port = Number(node.options.port);
    node.sendCommand = ((cmd: { name: string; args: unknown[] }, ...rest: unknown[]) => {
      sent.set(port, [...(sent.get(port) ?? []), `${cmd.name} ${cmd.args.map(String).join(' ')}`]);
      return send(cmd as Parameters<typeof send>[0], ...(rest as []));
    }) as typeof node.sendCommand;
    return () => {
      node.sendCommand = send;
    };
  });
  try {
    return { value: await fn(), sent };
  } finally {
    for (const restore of restores) restore();
  }
}

/** Each outcome of `calls` as its value, or as the error's class name and message. */
async function outcomes<T>(calls: Promise<T>[]): Promise<(T | string)[]> {
  const settled = await Promise.allSettled(calls);
  return settled.map((s) =>
    s.status === 'fulfilled' ? s.value : `${(s.reason as Error).name}: ${(s.reason as Error).message}`,
  );
}

/** Runs `traffic` and, `afterMs` later, finishes the migration while the traffic may still be retrying. */
async function finishDuring<T>(migration: SlotMigration, traffic: () => Promise<T>, afterMs = 150): Promise<T> {
  const running = traffic();
  await sleep(afterMs);
  await migration.finish();
  return running;
}

describe('cache while its slot moves', () => {
  it('get, mget, set, getOrSet and tag invalidation give the stored values on both sides and after the move', async () => {
    const { toolkit, client, keyPrefix } = await app();
    const cache = toolkit.get(CacheService);
    const slot = freshSlot();
    const keys = keysInSlot(
      slot,
      12,
      (k) => `${keyPrefix}cache:${k}`,
      (i) => `item-${i}`,
    );
    const tag = keyInSlot(
      slot,
      (t) => `${keyPrefix}cache:{${t}}:tag`,
      (i) => `tag-${i}`,
    );
    for (const [i, key] of keys.entries()) await cache.set(key, { i }, { ttl: DAY, tags: [tag] });
    const migration = await slotMigration(cluster(), slot);
    await fill(migration);
    await migration.begin();
    // half of the entries (and of the fillers) on the target, the rest still on the source
    await migration.moveKeys(keys.slice(0, 6).map((k) => `${keyPrefix}cache:${k}`));
    await migration.moveKeys(12);
    const split = await sides(migration);
    expect(split.source.length).toBeGreaterThan(0);
    expect(split.target.length).toBeGreaterThan(0);

    // reads of both halves, in one turn (one batch per master) and one by one
    expect(await outcomes(keys.map((k) => cache.get(k)))).toEqual(keys.map((_, i) => ({ i })));
    expect(await cache.mget(keys)).toEqual(keys.map((_, i) => ({ i })));
    // writes while the rest moves: an entry moved, one not moved, one new (a write with tags is a script over the
    // tag's index, which gets TRYAGAIN until the slot settles: ioredis asks again)
    let loads = 0;
    const fresh = keyInSlot(
      slot,
      (k) => `${keyPrefix}cache:${k}`,
      (i) => `fresh-${i}`,
    );
    const writes = await finishDuring(migration, () =>
      outcomes<unknown>([
        cache.set(keys[0], { i: 100 }, { ttl: DAY, tags: [tag] }),
        cache.set(keys[11], { i: 111 }, { ttl: DAY, tags: [tag] }),
        ...[1, 2, 3].map(() => cache.getOrSet(fresh, async () => ({ loaded: ++loads }), { ttl: DAY, tags: [tag] })),
      ]),
    );
    expect(writes).toEqual([undefined, undefined, { loaded: 1 }, { loaded: 1 }, { loaded: 1 }]);
    const after1 = await outcomes([...keys, fresh].map((k) => cache.get(k)));
    expect(after1).toEqual([{ i: 100 }, ...keys.slice(1, 11).map((_, i) => ({ i: i + 1 })), { i: 111 }, { loaded: 1 }]);
    expect(await migration.keysOn(migration.source)).toEqual([]);

    // after the move: the batch of reads goes to the new owner (after at most one redirection per key)
    await Promise.all(keys.map((k) => cache.get(k)));
    const after = await perPort(client, () => Promise.all(keys.map((k) => cache.get(k))));
    expect(after.value).toEqual([{ i: 100 }, ...keys.slice(1, 11).map((_, i) => ({ i: i + 1 })), { i: 111 }]);
    expect(after.sent.get(migration.source.port) ?? []).toEqual([]);
    expect((after.sent.get(migration.target.port) ?? []).filter((c) => c.startsWith('get '))).toHaveLength(12);
    expect(await cache.getOrSet(fresh, async () => ({ loaded: ++loads }), { ttl: DAY })).toEqual({ loaded: 1 });
    expect(loads).toBe(1);

    // the tag's index moved with the slot: invalidation finds every tagged entry
    expect(await cache.invalidateTags(tag)).toBe(13);
    expect(await cache.mget([...keys, fresh])).toEqual(Array.from({ length: 13 }, () => undefined));
    const stats = cache.stats();
    expect({ errors: stats.errors, failedOpen: stats.failedOpen }).toEqual({ errors: 0, failedOpen: 0 });
  });
});

describe('the cache L1 (client tracking per master) while its slot moves', () => {
  it('an entry held in L1 is dropped when another instance writes it on the new owner', async () => {
    const l1 = { l1: { max: 100, ttl: 60_000, invalidation: 'tracking' } };
    const reader = await app({ cache: l1 });
    const writer = await app({ cache: l1, keyPrefix: reader.keyPrefix });
    const cached = reader.toolkit.get(CacheService);
    const slot = freshSlot();
    const key = keyInSlot(
      slot,
      (k) => `${reader.keyPrefix}cache:${k}`,
      (i) => `l1-${i}`,
    );
    await writer.toolkit.get(CacheService).set(key, 'v1', { ttl: DAY });
    expect(await cached.get(key)).toBe('v1');
    const migration = await slotMigration(cluster(), slot);
    await fill(migration);
    await migration.begin();
    await migration.moveKeys(8);
    // written during the split (on whichever side holds it), then after the move (on the new owner)
    await writer.toolkit.get(CacheService).set(key, 'v2', { ttl: DAY });
    expect(await waitFor(async () => (await cached.get(key)) === 'v2', 3_000)).toBe(true);
    await migration.finish();
    await writer.toolkit.get(CacheService).set(key, 'v3', { ttl: DAY });
    expect(await waitFor(async () => (await cached.get(key)) === 'v3', 3_000)).toBe(true);
    expect(cached.stats().errors).toBe(0);
  });
});

describe.each(['sliding-window', 'fixed-window', 'token-bucket'] as const)(
  'rate limit (%s) while its slot moves',
  (algorithm) => {
    it('counts every consume exactly once: none lost, none charged twice, no failing open', async () => {
      const { toolkit, client } = await app();
      const rl = toolkit.get(RateLimitService);
      const policy = { limit: 100, ttl: DAY, algorithm };
      const slot = freshSlot();
      // two trackers of the slot: one whose counter moves early, one whose counter stays on the source until the end
      const [moving, staying] = keysInSlot(
        slot,
        2,
        (k) => rl.redisKey(k, 'any', algorithm),
        (i) => `user-${i}`,
      );
      const results: { allowed: boolean; degraded?: string }[] = [];
      const consume = (key: string, n: number) =>
        Promise.all(Array.from({ length: n }, () => rl.consume(key, policy))).then((r) => void results.push(...r));
      await consume(moving, 10);
      await consume(staying, 10);
      const migration = await slotMigration(cluster(), slot);
      await fill(migration);
      await migration.begin();
      const tagOf = (key: string) => rl.redisKey(key, 'any', algorithm).replace(/^.*?(\{[^}]*\}).*$/, '$1');
      const movingKeys = (await migration.keysOn(migration.source)).filter((k) => k.includes(tagOf(moving)));
      expect(movingKeys.length).toBeGreaterThan(0);
      await migration.moveKeys(movingKeys);
      await migration.moveKeys(8);

      // split (one counter on each side): consumes on both while the rest moves (a script whose keys are not all
      // present on a node of a migrating slot gets TRYAGAIN: ioredis asks again until the slot settles)
      await finishDuring(migration, () => Promise.all([consume(moving, 15), consume(staying, 15)]));
      // after the move
      const after = await perPort(client, () => Promise.all([consume(moving, 10), consume(staying, 10)]));
      // at most one call per counter still went to the old owner (answered MOVED)
      expect(after.sent.get(migration.source.port)?.length ?? 0).toBeLessThanOrEqual(2);
      await Promise.all([consume(moving, 10), consume(staying, 10)]);

      expect(results.filter((r) => r.degraded !== undefined)).toEqual([]);
      expect(results.filter((r) => r.allowed)).toHaveLength(90);
      // each counter charged exactly 45 times out of 100
      const peeks = await Promise.all([rl.peek(moving, policy), rl.peek(staying, policy)]);
      expect(peeks.map((p) => p.remaining)).toEqual([55, 55]);
      const stats = rl.stats();
      expect({ failedOpen: stats.failedOpen, replyErrors: stats.replyErrors }).toEqual({
        failedOpen: 0,
        replyErrors: 0,
      });
      expect(hashSlot(rl.redisKey(moving, 'any', algorithm))).toBe(slot);
    });
  },
);

describe('locks while their slot moves', () => {
  it('acquire, extend and release work on both sides; fencing tokens keep growing across the move', async () => {
    const { toolkit, client, keyPrefix } = await app();
    const locks = toolkit.get(LockService);
    const slot = freshSlot();
    const resources = keysInSlot(
      slot,
      4,
      (r) => `${keyPrefix}lock:{${r}}`,
      (i) => `res-${i}`,
    );
    const tokens = new Map<string, number[]>(resources.map((r) => [r, []]));
    const take = async (r: string) => {
      const lock = await locks.tryAcquire(r, { ttl: 30_000 });
      if (lock) tokens.get(r)?.push(lock.fencingToken);
      return lock;
    };
    // each resource once before the move (its fence exists), the first one held across the move
    for (const r of resources.slice(1)) await (await take(r))?.release();
    const held = await take(resources[0]);
    if (!held) throw new Error('the first resource was not taken');
    const migration = await slotMigration(cluster(), slot);
    await fill(migration);
    await migration.begin();
    // the held lock and resource 1 move; resources 2 and 3 stay on the source
    const moving = (await migration.keysOn(migration.source)).filter(
      (k) => k.includes(`{${resources[0]}}`) || k.includes(`{${resources[1]}}`),
    );
    await migration.moveKeys(moving);
    await migration.moveKeys(6);

    // during the split: the held lock extends (moved) and each other resource is taken and given back
    const during = await finishDuring(migration, () =>
      outcomes([
        held.extend(30_000).then(() => 'extended'),
        ...resources.slice(1).map(async (r) => {
          const lock = await take(r);
          await lock?.release();
          return lock === null ? 'busy' : 'taken';
        }),
      ]),
    );
    expect(during).toEqual(['extended', 'taken', 'taken', 'taken']);
    await held.release();

    // after the move: each resource again, per-master batch on the new owner
    const after = await perPort(client, () => Promise.all(resources.map(take)));
    expect(after.value.every((l) => l !== null)).toBe(true);
    // the turn's acquisitions went to the new owner only (the slot table followed the earlier MOVED)
    expect(after.sent.get(migration.source.port) ?? []).toEqual([]);
    expect((after.sent.get(migration.target.port) ?? []).filter((c) => /^eval/.test(c))).toHaveLength(4);
    await Promise.all(after.value.map((l) => l?.release()));
    const again = await Promise.all(resources.map(take));
    await Promise.all(again.map((l) => l?.release()));
    for (const r of resources) {
      const seen = tokens.get(r) ?? [];
      expect(seen).toHaveLength(r === resources[0] ? 3 : 4);
      expect(seen).toEqual([...seen].sort((a, b) => a - b));
      expect(new Set(seen).size).toBe(seen.length);
    }
    expect(locks.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
  });

  it('a lock taken while its fence has moved and the lock key has not waits for the move, then gets a larger token', async () => {
    const { toolkit, keyPrefix } = await app();
    const locks = toolkit.get(LockService);
    const slot = freshSlot();
    const resource = keyInSlot(
      slot,
      (r) => `${keyPrefix}lock:{${r}}`,
      (i) => `split-${i}`,
    );
    const first = await locks.tryAcquire(resource, { ttl: 30_000 });
    const firstToken = first?.fencingToken ?? -1;
    await first?.release();
    const migration = await slotMigration(cluster(), slot);
    await migration.begin();
    // only the fence moves: a script over [lock, fence] finds its keys split (TRYAGAIN) until the slot is moved
    await migration.moveKeys([`${keyPrefix}lock:{${resource}}:fence`]);
    const [outcome] = await finishDuring(migration, () => outcomes([locks.tryAcquire(resource, { ttl: 30_000 })]), 300);
    expect(outcome).not.toBeNull();
    if (typeof outcome === 'string' || outcome === null) throw new Error(`tryAcquire failed: ${String(outcome)}`);
    expect(outcome.fencingToken).toBeGreaterThan(firstToken);
    await outcome.release();
  });
});

describe('a split held for a while', () => {
  it('calls whose scripts get TRYAGAIN wait for the slot within commandTimeout, past ioredis redirections', async () => {
    const { toolkit, keyPrefix } = await app({ commandTimeout: 3_000 });
    const locks = toolkit.get(LockService);
    const rl = toolkit.get(RateLimitService);
    const sessions = toolkit.get(SessionService);
    const cache = toolkit.get(CacheService);
    const policy = { limit: 100, ttl: DAY, algorithm: 'sliding-window' as const };
    const session = await sessions.create('user-held', { n: 0 });
    const slot = hashSlot(`${keyPrefix}sess:{${session.id}}`);
    const resource = keyInSlot(
      slot,
      (r) => `${keyPrefix}lock:{${r}}`,
      (i) => `held-${i}`,
    );
    const tracker = keyInSlot(
      slot,
      (k) => rl.redisKey(k, 'any', 'sliding-window'),
      (i) => `tracker-${i}`,
    );
    const entry = keyInSlot(
      slot,
      (k) => `${keyPrefix}cache:${k}`,
      (i) => `entry-${i}`,
    );
    const tag = keyInSlot(
      slot,
      (t) => `${keyPrefix}cache:{${t}}:tag`,
      (i) => `tag-${i}`,
    );
    await (await locks.tryAcquire(resource))?.release();
    await rl.consume(tracker, policy);
    await cache.set(entry, 1, { ttl: DAY, tags: [tag] });
    const migration = await slotMigration(cluster(), slot);
    await migration.begin();
    // one key of each feature moves: its other keys (present or not) make each script's keys split
    await migration.moveKeys([
      `${keyPrefix}lock:{${resource}}:fence`,
      `${keyPrefix}sess:{${session.id}}`,
      `${keyPrefix}cache:${entry}`,
    ]);
    // ioredis gives up after 16 redirections (~0.6 s of TRYAGAIN); the slot settles after 1 s, within commandTimeout
    const started = Date.now();
    const during = await finishDuring(
      migration,
      () =>
        outcomes<unknown>([
          locks
            .tryAcquire(resource, { ttl: 20_000 })
            .then(async (l) => (l === null ? 'busy' : (await l.release(), 'taken'))),
          rl.consume(tracker, policy).then((r) => r.degraded ?? r.allowed),
          sessions.update(session.id, { n: 1 }).then((s) => s.data),
          cache.set(entry, 2, { ttl: DAY, tags: [tag] }).then(() => 'set'),
        ]),
      1_000,
    );
    expect(during).toEqual(['taken', true, { n: 1 }, 'set']);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
    expect((await rl.peek(tracker, policy)).remaining).toBe(98);
    expect(await cache.invalidateTags(tag)).toBe(1);
  });

  it('a call that timed out on TRYAGAIN is not run later, once the slot settles (no ghost lock, no hidden charge)', async () => {
    const { toolkit, keyPrefix } = await app({ commandTimeout: 300 });
    const other = await app({ keyPrefix, commandTimeout: 1_000 });
    const locks = toolkit.get(LockService);
    const rl = toolkit.get(RateLimitService);
    const policy = { limit: 100, ttl: DAY, algorithm: 'sliding-window' as const };
    const slot = freshSlot();
    const resource = keyInSlot(
      slot,
      (r) => `${keyPrefix}lock:{${r}}`,
      (i) => `ghost-${i}`,
    );
    const tracker = keyInSlot(
      slot,
      (k) => rl.redisKey(k, 'any', 'sliding-window'),
      (i) => `tracker-${i}`,
    );
    // every master knows the scripts (a call sent again later would not stop at NOSCRIPT); set up through the other
    // app, whose commandTimeout a busy machine does not run out
    const otherLocks = other.toolkit.get(LockService);
    const otherRl = other.toolkit.get(RateLimitService);
    for (let i = 0; i < 24; i++) {
      await (await otherLocks.tryAcquire(`warm-${i}`))?.release();
      await otherRl.consume(`warm-${i}`, policy);
    }
    await (await otherLocks.tryAcquire(resource))?.release();
    expect((await otherRl.consume(tracker, policy)).degraded).toBeUndefined();
    const migration = await slotMigration(cluster(), slot);
    await migration.begin();
    // the fence moves, the lock key is absent: the acquire script gets TRYAGAIN for as long as the slot migrates
    await migration.moveKeys([`${keyPrefix}lock:{${resource}}:fence`]);
    const [acquired, consumed] = await outcomes<unknown>([
      locks.tryAcquire(resource, { ttl: 20_000 }),
      rl.consume(tracker, policy),
    ]);
    // neither could be decided within commandTimeout: a typed error (locks fail closed), fail-open (rate limit)
    expect(String(acquired)).toMatch(/^RedisUnavailableError: /);
    expect((consumed as { degraded?: string }).degraded).toBe('fail-open');
    await migration.finish();
    await sleep(1_500);
    // the lock is free for another service, and the counter holds only the one charge Redis decided
    const next = await otherLocks.tryAcquire(resource);
    expect(next).not.toBeNull();
    await next?.release();
    expect((await otherRl.peek(tracker, policy)).remaining).toBe(99);
  });
});

describe('sessions while their slot moves', () => {
  it('create, get, update and destroy give the stored session on both sides and after the move', async () => {
    const { toolkit, keyPrefix } = await app();
    const sessions = toolkit.get(SessionService);
    const a = await sessions.create('user-a', { n: 0 });
    const slot = hashSlot(`${keyPrefix}sess:{${a.id}}`);
    const migration = await slotMigration(cluster(), slot);
    await fill(migration);
    await migration.begin();
    await migration.moveKeys((await migration.keysOn(migration.source)).filter((k) => k.includes(a.id)));
    await migration.moveKeys(8);
    const split = await sides(migration);
    expect(split.target.some((k) => k.includes(a.id))).toBe(true);
    expect(split.source.length).toBeGreaterThan(0);

    // during the split: a read (ASK to the target), then updates while the rest moves (the compare-and-set script
    // gets TRYAGAIN until the slot settles)
    expect((await sessions.get<{ n: number }>(a.id))?.data).toEqual({ n: 0 });
    const during = await finishDuring(migration, () =>
      outcomes<unknown>([
        ...[1, 2, 3].map((n) => sessions.update(a.id, { [`f${n}`]: n }).then(() => n)),
        sessions.get(a.id).then((s) => s !== null),
      ]),
    );
    expect(during).toEqual([1, 2, 3, true]);
    await sessions.update(a.id, { n: 1 });
    expect((await sessions.get(a.id))?.data).toEqual({ n: 1, f1: 1, f2: 2, f3: 3 });
    expect(await sessions.destroy(a.id)).toBe(true);
    expect(await sessions.get(a.id)).toBeNull();
    expect(sessions.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
  });
});

describe.each(['sharded', 'classic'] as const)('pub/sub (%s) while a channel slot moves', (mode) => {
  it('every publish resolves, and the subscriber receives on the new owner after the move', async () => {
    const sub = await app({ pubsub: { cluster: mode } });
    // the same prefix: the Redis channel is `<prefix>ps:<channel>`
    const pub = await app({ pubsub: { cluster: mode }, keyPrefix: sub.keyPrefix });
    const subscriber = sub.toolkit.get(PubSubService);
    const publisher = pub.toolkit.get(PubSubService);
    const slot = freshSlot();
    const channel = keyInSlot(
      slot,
      (c) => `${sub.keyPrefix}ps:${c}`,
      (i) => `ch-${i}`,
    );
    const got: unknown[] = [];
    await subscriber.subscribe(channel, (p) => void got.push(p));
    await publisher.publish(channel, 'before');
    expect(await waitFor(() => got.includes('before'), 5_000)).toBe(true);
    const migration = await slotMigration(cluster(), slot);
    await fill(migration);
    await migration.begin();
    await migration.moveKeys(12);
    const during = await outcomes([publisher.publish(channel, 'during')]);
    expect(during.filter((d) => typeof d === 'string')).toEqual([]);
    await migration.finish();
    const received = await waitFor(async () => {
      await publisher.publish(channel, 'after');
      return got.includes('after');
    }, 8_000);
    expect(received).toBe(true);
    expect(got).toContain('during');
    expect(publisher.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
    expect(subscriber.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
  });
});

it('reshard.ts moves a slot key by key in pages: the source keeps none and every master names the target', async () => {
  const slot = freshSlot();
  const migration = await slotMigration(cluster(), slot);
  await fill(migration, 35);
  await migration.begin();
  expect(await migration.moveKeys(12)).toBe(12);
  expect((await sides(migration)).target).toHaveLength(12);
  await migration.finish();
  expect(migration.moved).toBe(35);
  expect(await sides(migration)).toEqual({ source: [], target: expect.arrayContaining(fillerKeys(slot, 35)) });
  const errors = await Promise.allSettled([rawCommand(migration.source.port, ['GET', fillerKeys(slot, 1)[0]])]);
  expect(String((errors[0] as PromiseRejectedResult).reason)).toMatch(/MOVED/);
});
