/**
 * More of what a reshard (`redis-cli --cluster reshard`) does to the features, beside cluster-reshard.spec.ts: a
 * session created in a migrating slot, semaphores and multi-resource locks across the move, durable pub/sub (streams),
 * what a call that timed out on a migrating slot says, and a cluster client of the user's whose maxRedirections runs
 * out before its commandTimeout.
 *
 * The slots move on a private cluster (useDisposableCluster), with real commands (test/support/reshard.ts).
 */
import 'reflect-metadata';
import { Cluster } from 'ioredis';
import { CacheService, LockService, PubSubService, RateLimitService, SessionService } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { hashSlot } from '../../lib/common/bulk-keys.js';
import { ownedBy, useDisposableCluster } from '../support/disposable-cluster.js';
import { recordingLogger } from '../support/recording-logger.js';
import { countCloses } from '../support/reply-limit.js';
import {
  emptySlotsMigration,
  fillSlot,
  keyInSlot,
  keysInSlot,
  ownerOf,
  reshardApp,
  slotMigration,
  type SlotMigration,
} from '../support/reshard.js';
import { rawCommand, rawCommands } from '../support/resp.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
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
/** Slots the cases move, one each, away from the range the session case moves (0 to 1023). */
let nextSlot = 2_000;
const freshSlot = (): number => (nextSlot += 997) % 16_384;

const app = (extra: Record<string, unknown> = {}) => reshardApp(cluster(), 'rm', extra);

const fill = (migration: SlotMigration, count = 16): Promise<void> => fillSlot(migration, count, DAY);

/** Each outcome of `calls` as its value, or as the error's class name and message. */
async function outcomes<T>(calls: Promise<T>[]): Promise<(T | string)[]> {
  const settled = await Promise.allSettled(calls);
  return settled.map((s) =>
    s.status === 'fulfilled' ? s.value : `${(s.reason as Error).name}: ${(s.reason as Error).message}`,
  );
}

/** Runs `traffic` and, `afterMs` later, finishes the migration while the traffic may still be retrying. */
async function finishDuring<T>(migration: { finish(): Promise<void> }, traffic: () => Promise<T>, afterMs = 150) {
  const running = traffic();
  await sleep(afterMs);
  await migration.finish();
  return running;
}

/** The keys of `migration.slot` on its source that contain `part`. */
async function keysWith(migration: SlotMigration, part: string): Promise<string[]> {
  return (await migration.keysOn(migration.source)).filter((k) => k.includes(part));
}

describe('sessions created in a migrating slot', () => {
  it('a create whose id lands in a migrating slot waits for the slot, and is stored on the new owner', async () => {
    const { toolkit, keyPrefix } = await app({ commandTimeout: 3_000 });
    const sessions = toolkit.get(SessionService);
    // 1024 empty slots of one master migrate at once: 1 session in 16 lands in one (its id is random)
    const slots = Array.from({ length: 1_024 }, (_, i) => i);
    const source = await ownerOf(cluster(), 0);
    expect(await ownerOf(cluster(), 1_023)).toBe(source);
    const target = cluster().masters.find((m) => m !== source) ?? source;
    const migration = await emptySlotsMigration(cluster(), slots, source, target);
    await migration.begin();
    // both keys of the create script (the session, its tombstone) are absent: the target answers TRYAGAIN after ASK
    const created = await finishDuring(
      migration,
      () => outcomes(Array.from({ length: 200 }, (_, i) => sessions.create(`user-${i}`, { i }))),
      400,
    );
    const failed = created.filter((c) => typeof c === 'string');
    expect(failed).toEqual([]);
    const made = created as { id: string; data: { i: number } }[];
    const landed = made.filter((s) => hashSlot(`${keyPrefix}sess:{${s.id}}`) < 1_024);
    expect(landed.length).toBeGreaterThan(0);
    // each one readable, with its own data; those in the moved slots stored on the target
    const read = await Promise.all(made.map((s) => sessions.get<{ i: number }>(s.id)));
    expect(read.map((s) => s?.data)).toEqual(made.map((s) => s.data));
    const onTarget = await rawCommands(
      target.port,
      landed.map((s) => ['EXISTS', `${keyPrefix}sess:{${s.id}}`]),
    );
    expect(onTarget).toEqual(landed.map(() => 1));
    expect(sessions.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
  });
});

describe('semaphores while their slot moves', () => {
  it('holders are kept across the move: never more than the limit, each permit extended and released', async () => {
    const { toolkit, keyPrefix } = await app();
    const locks = toolkit.get(LockService);
    const slot = freshSlot();
    const name = keyInSlot(
      slot,
      (n) => `{${n}}`,
      (i) => `sem-${i}`,
    );
    const semaphore = locks.semaphore(name, { limit: 3, ttl: 30_000 });
    const held = await Promise.all([semaphore.tryAcquire(), semaphore.tryAcquire()]);
    expect(held.every((p) => p !== null)).toBe(true);
    const migration = await slotMigration(cluster(), slot);
    await fill(migration);
    await migration.begin();
    await migration.moveKeys(6);
    const beforeMove = await semaphore.holders();
    // the holders' sorted set moves: the calls before it on the source, after it ASK to the target
    await migration.moveKeys([`${keyPrefix}lock:{${name}}:sem`]);
    const during = await finishDuring(migration, () =>
      outcomes<unknown>([
        semaphore.tryAcquire().then((p) => (p === null ? 'refused' : p)),
        semaphore.tryAcquire().then((p) => (p === null ? 'refused' : 'admitted')),
        ...held.map(async (p) => p?.extend(30_000).then(() => 'extended')),
      ]),
    );
    expect(beforeMove).toBe(2);
    expect(during.slice(1)).toEqual(['refused', 'extended', 'extended']);
    const third = during[0];
    if (typeof third === 'string') throw new Error(`the third permit: ${third}`);
    expect(await semaphore.holders()).toBe(3);
    expect(await semaphore.tryAcquire()).toBeNull();
    await (third as { release(): Promise<void> }).release();
    const fourth = await semaphore.tryAcquire();
    expect(fourth).not.toBeNull();
    await Promise.all([...held, fourth].map((p) => p?.release()));
    expect(await semaphore.holders()).toBe(0);
    expect(locks.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
  });
});

describe('multi-resource locks while a slot moves', () => {
  it('acquireAll over resources on both sides of the move takes all, excludes single locks, and fences grow', async () => {
    const { toolkit } = await app();
    const locks = toolkit.get(LockService);
    const slot = freshSlot();
    const [moving, staying] = keysInSlot(
      slot,
      2,
      (r) => `{${r}}`,
      (i) => `multi-${i}`,
    );
    const elsewhere = keyInSlot(
      freshSlot(),
      (r) => `{${r}}`,
      (i) => `other-${i}`,
    );
    const resources = [moving, staying, elsewhere];
    const first = await locks.tryAcquireAll(resources, { ttl: 30_000 });
    if (first === null) throw new Error('not taken before the move');
    const before = { ...first.fencingTokens };
    await first.release();
    const migration = await slotMigration(cluster(), slot);
    await fill(migration);
    await migration.begin();
    // one resource's fence moves, its lock key is absent (TRYAGAIN until the slot settles); the other stays
    await migration.moveKeys(await keysWith(migration, `{${moving}}`));
    await migration.moveKeys(6);
    const [multi] = await finishDuring(
      migration,
      () => outcomes([locks.acquireAll(resources, { ttl: 30_000, retry: { count: 0 } })]),
      300,
    );
    if (typeof multi === 'string') throw new Error(`acquireAll failed: ${multi}`);
    expect(multi.resources).toEqual([...resources].sort((a, b) => (`{${a}}` < `{${b}}` ? -1 : 1)));
    expect(await outcomes(resources.map((r) => locks.tryAcquire(r)))).toEqual([null, null, null]);
    const after = multi.fencingTokens;
    for (const r of resources) expect(after[r]).toBeGreaterThan(before[r]);
    await multi.release();
    const again = await locks.tryAcquireAll(resources, { ttl: 30_000 });
    expect(again).not.toBeNull();
    await again?.release();
    expect(await migration.keysOn(migration.source)).toEqual([]);
    expect(locks.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
  });
});

describe.each(['sharded', 'classic'] as const)('durable pub/sub (%s) while a stream slot moves', (mode) => {
  it('every notifyUser is stored once and delivered; replay gives them all in order after the move', async () => {
    const sub = await app({ pubsub: { cluster: mode, durable: true } });
    const pub = await app({ pubsub: { cluster: mode, durable: true }, keyPrefix: sub.keyPrefix });
    const subscriber = sub.toolkit.get(PubSubService);
    const publisher = pub.toolkit.get(PubSubService);
    const slot = freshSlot();
    const user = keyInSlot(
      slot,
      (u) => `{${u}}`,
      (i) => `member-${i}`,
    );
    const got: unknown[] = [];
    await subscriber.subscribe(`user:${user}`, (p) => void got.push(p));
    await publisher.notifyUser(user, 'before');
    const migration = await slotMigration(cluster(), slot);
    await fill(migration);
    await migration.begin();
    await migration.moveKeys(6);
    // the stream still on the source, then moved (its transaction answered ASK: sent again to the target)
    const split = await outcomes([publisher.notifyUser(user, 'split-1')]);
    await migration.moveKeys(await keysWith(migration, `{${user}}`));
    const during = await finishDuring(migration, () =>
      outcomes([publisher.notifyUser(user, 'moved-1'), publisher.notifyUser(user, 'moved-2')]),
    );
    const after = await outcomes([publisher.notifyUser(user, 'after')]);
    expect([...split, ...during, ...after].filter((o) => typeof o === 'string')).toEqual([]);
    const sent = ['before', 'split-1', 'moved-1', 'moved-2', 'after'];
    const replayed = await publisher.replay(user, '0-0');
    expect(replayed.map((m) => m.data).sort()).toEqual([...sent].sort());
    expect(replayed.map((m) => m.data).slice(0, 2)).toEqual(['before', 'split-1']);
    expect(replayed.map((m) => m.data).at(-1)).toBe('after');
    expect(await waitFor(() => sent.every((m) => got.includes(m)), 5_000)).toBe(true);
    expect(got).toHaveLength(sent.length);
    expect(publisher.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
  });
});

describe('the reply budget (client-output-buffer-limit normal 1mb) while a slot moves', () => {
  const big = (c: string) => c.repeat(600_000);
  const setLimit = async (limit: string) => {
    for (const master of cluster().masters)
      await rawCommand(master.port, ['CONFIG', 'SET', 'client-output-buffer-limit', limit]);
  };
  afterEach(() => setLimit('normal 0 0 0'));

  // A read of a key whose slot migrates goes to the slot's owner as last known (the source), which answers ASK: its
  // reply comes from the target. Reserved on the source's account, it went beside the target's own reads, and the
  // target closed the connection (4 runs of 4 on 2026-12-06). budgeted-reads.ts now reserves such a read on both
  // nodes' accounts (migratingTo in cluster-masters.ts, from the ASKs seen).
  it("reads of a moved entry and of the target's own entries stay under the target's limit together", async () => {
    await setLimit('normal 1mb 0 0');
    // commandTimeout 5 s: the case is about the budget (no connection closed, no read failed); a 600 KB read on a
    // CPU-starved box (CI's three shards beside the cluster) is not what it checks. The warnings say why a read failed
    const log = recordingLogger();
    const { toolkit, keyPrefix } = await app({ commandTimeout: 5_000, logger: log.logger });
    const cache = toolkit.get(CacheService);
    const slot = freshSlot();
    const moved = keysInSlot(
      slot,
      6,
      (k) => `${keyPrefix}cache:${k}`,
      (i) => `moved-${i}`,
    );
    const migration = await slotMigration(cluster(), slot);
    const candidates = Array.from({ length: 64 }, (_, i) => `own-${i}`);
    const owned = await ownedBy(
      migration.target,
      candidates.map((k) => `${keyPrefix}cache:${k}`),
    );
    const own = candidates.filter((_, i) => owned[i]).slice(0, 6);
    for (const k of moved) await cache.set(k, big('m'), { ttl: DAY });
    for (const k of own) await cache.set(k, big('o'), { ttl: DAY });
    await migration.begin();
    await migration.moveKeys(moved.map((k) => `${keyPrefix}cache:${k}`));
    const closes = countCloses(toolkit.get(RedisConnection).client as Cluster);
    // in one turn: the target's own entries, and the moved ones (asked of the source, answered ASK, read on the target)
    // (three rounds: whether two replies meet on the target depends on timing; before, 1 to 2 reads of 12 failed)
    const reads = [...own, ...moved];
    // Each round with what a failure needs to be read: a read that failed open (a closed connection, a timeout) is
    // counted in failedOpen and warned of, a miss is neither (a loaded run, 2026-12-07, had 5 reads of 12 undefined in
    // one round; CI that night 2 failed open, with the 1 s default commandTimeout, no connection closed)
    const expected = reads.map((k) => (moved.includes(k) ? 'm:600000' : 'o:600000'));
    for (let round = 0; round < 3; round++) {
      const values = await Promise.all(reads.map((k) => cache.get(k)));
      const shown = values.map((v) => (typeof v === 'string' ? `${v[0]}:${v.length}` : String(v)));
      const failedOpen = cache.stats().failedOpen;
      expect({ round, shown, closes: closes(), failedOpen, warnings: log.warnings }).toEqual({
        round,
        shown: expected,
        closes: 0,
        failedOpen: 0,
        warnings: [],
      });
    }
    await migration.finish();
  });
});

describe('a call that times out while its slot migrates', () => {
  it('fails with the typed error, naming the slot and the TRYAGAIN it waited on', async () => {
    const { toolkit, keyPrefix } = await app({ commandTimeout: 400 });
    const locks = toolkit.get(LockService);
    const rl = toolkit.get(RateLimitService);
    const policy = { limit: 10, ttl: DAY, algorithm: 'sliding-window' as const };
    const slot = freshSlot();
    const resource = keyInSlot(
      slot,
      (r) => `{${r}}`,
      (i) => `stuck-${i}`,
    );
    await (await locks.tryAcquire(resource))?.release();
    // a plain timeout says what it said before: nothing about a slot
    const paused = await app({ commandTimeout: 200, keyPrefix });
    const migration = await slotMigration(cluster(), slot);
    await migration.begin();
    await migration.moveKeys([`${keyPrefix}lock:{${resource}}:fence`]);
    const [acquired] = await outcomes([locks.tryAcquire(resource, { ttl: 20_000 })]);
    expect(String(acquired)).toMatch(
      new RegExp(
        `^RedisUnavailableError: .*Command timed out while its hash slot ${slot} was migrating to another node ` +
          '\\(a reshard; Redis answered TRYAGAIN \\d+ times.*last: TRYAGAIN ',
      ),
    );
    const consumed = await rl.consume(
      keyInSlot(slot, (k) => rl.redisKey(k, 'any', 'sliding-window')),
      policy,
    );
    expect(consumed.degraded).toBe('fail-open');
    await migration.finish();
    // the same error when nothing migrates (a paused master): no slot named
    const owner = await ownerOf(cluster(), slot);
    const other = paused.toolkit.get(LockService);
    await rawCommand(owner.port, ['CLIENT', 'PAUSE', '600', 'ALL']);
    const [slow] = await outcomes([other.tryAcquire(resource, { ttl: 20_000 })]);
    expect(String(slow)).toMatch(/^RedisUnavailableError: .*Command timed out$/);
    await sleep(700);
  });
});

describe('a cluster client of the user’s (connection: { client })', () => {
  it('is warned about at start when its maxRedirections runs out before its commandTimeout', async () => {
    const nodes = cluster().startupNodes;
    const made: Cluster[] = [];
    const start = async (options: ConstructorParameters<typeof Cluster>[1]) => {
      const client = new Cluster(nodes, options);
      made.push(client);
      const log = recordingLogger();
      await createToolkitApp({ target: { client }, logger: log.logger, keyPrefix: 'rmc:' });
      return log.warnings.filter((w) => /maxRedirections/.test(w));
    };
    try {
      const warned = await start({ redisOptions: { commandTimeout: 2_000 } });
      expect(warned).toHaveLength(1);
      expect(warned[0]).toMatch(/has maxRedirections 16: .*TRYAGAIN.*Give it maxRedirections: 76 /);
      expect(await start({ redisOptions: { commandTimeout: 2_000 }, maxRedirections: 76 })).toEqual([]);
      // a longer retryDelayOnTryAgain needs fewer: 16 + 3 per round of 500 ms
      const slower = await start({ redisOptions: { commandTimeout: 2_000 }, retryDelayOnTryAgain: 500 });
      expect(slower).toEqual([expect.stringMatching(/every 500 ms .*Give it maxRedirections: 28 /)]);
      expect(
        await start({ redisOptions: { commandTimeout: 2_000 }, retryDelayOnTryAgain: 500, maxRedirections: 28 }),
      ).toEqual([]);
      // the toolkit's own cluster, with clusterOptions that set too few
      const log = recordingLogger();
      await createToolkitApp({
        target: { cluster: nodes, clusterOptions: { maxRedirections: 10 } },
        commandTimeout: 1_000,
        logger: log.logger,
      });
      expect(log.warnings.filter((w) => /maxRedirections 10: /.test(w))).toHaveLength(1);
    } finally {
      await closeToolkitApps();
      await Promise.all(made.map((c) => c.quit().catch(() => undefined)));
    }
  });

  it('with the maxRedirections warned about, a call waits out a split within its commandTimeout', async () => {
    const nodes = cluster().startupNodes;
    const slot = freshSlot();
    const tight = new Cluster(nodes, { redisOptions: { commandTimeout: 2_000 } });
    const enough = new Cluster(nodes, { redisOptions: { commandTimeout: 2_000 }, maxRedirections: 76 });
    try {
      const keys = keysInSlot(
        slot,
        2,
        (k) => k,
        (i) => `rmc-${i}`,
      );
      expect(hashSlot(keys[0])).toBe(slot);
      await tight.set(keys[0], 'a');
      const migration = await slotMigration(cluster(), slot);
      await migration.begin();
      await migration.moveKeys([keys[0]]);
      // MGET of a moved key and a missing one: TRYAGAIN until the slot settles (1 s later)
      const started = Date.now();
      const [few, many] = await finishDuring(
        migration,
        () => outcomes([tight.mget(keys[0], keys[1]), enough.mget(keys[0], keys[1])]),
        1_000,
      );
      expect(String(few)).toMatch(/Too many Cluster redirections/);
      expect(many).toEqual(['a', null]);
      expect(Date.now() - started).toBeLessThan(2_000);
    } finally {
      await Promise.all([tight.quit(), enough.quit()].map((p) => p.catch(() => undefined)));
    }
  });
});
