/**
 * Moves a hash slot between two masters of a harness cluster the way `redis-cli --cluster reshard` does, key by key
 * with real commands: CLUSTER SETSLOT <slot> IMPORTING on the target, MIGRATING on the source, CLUSTER GETKEYSINSLOT in
 * bounded pages, MIGRATE ... KEYS of each page, then CLUSTER SETSLOT <slot> NODE on every master (target first, then
 * source, as redis-cli does). Between the steps the test runs traffic: after `begin()` and a `moveKeys(n)` the slot's
 * keys are split between the two nodes (a command on a moved key gets ASK, a script whose keys are split TRYAGAIN);
 * after `finish()` the source answers MOVED.
 *
 * Use it on a private cluster (useDisposableCluster): the shared harness cluster must keep its slot layout.
 */
import { randomBytes } from 'node:crypto';
import { Cluster } from 'ioredis';
import { RedisConnection } from '../../lib/advanced.js';
import { hashSlot } from '../../lib/common/bulk-keys.js';
import type { RedisClusterHandle } from './redis-cluster.js';
import type { RedisServerHandle } from './redis-server.js';
import { rawCommand, rawCommands } from './resp.js';
import { createToolkitApp } from './toolkit-app.js';
import { waitFor } from './wait.js';

/** Keys fetched per CLUSTER GETKEYSINSLOT page (and moved per MIGRATE), as redis-cli's --cluster-pipeline default. */
const PAGE = 10;
/** MIGRATE's own timeout (ms) for one page. */
const MIGRATE_TIMEOUT_MS = 5_000;

type SlotRange = [number, number, [string, number, string?], ...unknown[]];

/** The master (of `cluster`) that owns `slot` now, from CLUSTER SLOTS asked of its first master. */
export async function ownerOf(cluster: RedisClusterHandle, slot: number): Promise<RedisServerHandle> {
  const ranges = (await rawCommand(cluster.masters[0].port, ['CLUSTER', 'SLOTS'])) as SlotRange[];
  const range = ranges.find(([from, to]) => slot >= from && slot <= to);
  const owner = cluster.masters.find((m) => m.port === range?.[2][1]);
  if (!owner) throw new Error(`no master owns slot ${slot}`);
  return owner;
}

/**
 * The first `name(i)` (i = 0, 1, ...) whose Redis key (`redisKey(name)`) lands in `slot`: how a test picks caller keys
 * of the migrating slot when the feature builds the Redis key (its prefix, its hash tag) from the caller's.
 */
export function keyInSlot(slot: number, redisKey: (name: string) => string, name = (i: number) => `k${i}`): string {
  for (let i = 0; i < 1_000_000; i++) {
    const candidate = name(i);
    if (hashSlot(redisKey(candidate)) === slot) return candidate;
  }
  throw new Error(`no key of slot ${slot} among a million candidates`);
}

/** `count` caller keys (`name(i)` for growing i) whose Redis keys land in `slot`, as keyInSlot. */
export function keysInSlot(
  slot: number,
  count: number,
  redisKey: (name: string) => string,
  name = (i: number) => `k${i}`,
): string[] {
  const found: string[] = [];
  for (let i = 0; found.length < count && i < 10_000_000; i++)
    if (hashSlot(redisKey(name(i))) === slot) found.push(name(i));
  if (found.length < count) throw new Error(`only ${found.length} of ${count} keys of slot ${slot} found`);
  return found;
}

/** `count` Redis keys `{<tag>}:filler:<i>` of `slot` (a hash tag found for it), for a slot with keys to move. */
export function fillerKeys(slot: number, count: number): string[] {
  const tag = keyInSlot(
    slot,
    (name) => `{${name}}`,
    (i) => `t${i}`,
  );
  return Array.from({ length: count }, (_, i) => `{${tag}}:filler:${i}`);
}

export interface SlotMigration {
  readonly slot: number;
  readonly source: RedisServerHandle;
  readonly target: RedisServerHandle;
  /** Keys moved so far. */
  readonly moved: number;
  /** CLUSTER SETSLOT IMPORTING on the target, then MIGRATING on the source. */
  begin(): Promise<void>;
  /**
   * Moves up to `max` keys still on the source (every key when omitted), a GETKEYSINSLOT page at a time, or exactly
   * `keys` when given (each must be on the source). Resolves with how many it moved.
   */
  moveKeys(max?: number | string[]): Promise<number>;
  /**
   * Moves every key left, then CLUSTER SETSLOT NODE <target> on the target, the source and every other master, and
   * waits until each master's CLUSTER SLOTS names the target.
   */
  finish(): Promise<void>;
  /** The keys of the slot on `node` (GETKEYSINSLOT, up to 1000). */
  keysOn(node: RedisServerHandle): Promise<string[]>;
}

const nodeIds = new WeakMap<RedisServerHandle, string>();

async function idOf(node: RedisServerHandle): Promise<string> {
  let id = nodeIds.get(node);
  if (id === undefined) {
    id = String(await rawCommand(node.port, ['CLUSTER', 'MYID']));
    nodeIds.set(node, id);
  }
  return id;
}

/**
 * A migration of `slot` from its owner to `to` (default: the next master after the owner). Nothing moves until
 * `begin()`.
 */
export async function slotMigration(
  cluster: RedisClusterHandle,
  slot: number,
  to?: RedisServerHandle,
): Promise<SlotMigration> {
  const source = await ownerOf(cluster, slot);
  const target = to ?? cluster.masters[(cluster.masters.indexOf(source) + 1) % cluster.masters.length];
  if (target === source) throw new Error(`slot ${slot} is already on ${target.port}`);
  const [sourceId, targetId] = await Promise.all([idOf(source), idOf(target)]);
  let moved = 0;
  const keysOn = async (node: RedisServerHandle, count = 1000): Promise<string[]> =>
    (await rawCommand(node.port, ['CLUSTER', 'GETKEYSINSLOT', String(slot), String(count)])) as string[];
  const migrate = async (keys: string[]): Promise<void> => {
    if (keys.length === 0) return;
    const reply = await rawCommand(
      source.port,
      ['MIGRATE', target.host, String(target.port), '', '0', String(MIGRATE_TIMEOUT_MS), 'KEYS', ...keys],
      { timeoutMs: MIGRATE_TIMEOUT_MS + 2_000 },
    );
    // NOKEY: every key of the page expired or was deleted meanwhile; nothing to move
    if (reply !== 'OK' && reply !== 'NOKEY') throw new Error(`MIGRATE of slot ${slot} answered ${String(reply)}`);
    moved += keys.length;
  };
  const moveKeys = async (max: number | string[] = Number.POSITIVE_INFINITY): Promise<number> => {
    if (Array.isArray(max)) {
      await migrate(max);
      return max.length;
    }
    let done = 0;
    while (done < max) {
      const page = await keysOn(source, Math.min(PAGE, max - done));
      if (page.length === 0) break;
      await migrate(page);
      done += page.length;
    }
    return done;
  };
  return {
    slot,
    source,
    target,
    get moved() {
      return moved;
    },
    begin: async () => {
      await rawCommand(target.port, ['CLUSTER', 'SETSLOT', String(slot), 'IMPORTING', sourceId]);
      await rawCommand(source.port, ['CLUSTER', 'SETSLOT', String(slot), 'MIGRATING', targetId]);
    },
    moveKeys,
    finish: async () => {
      await moveKeys();
      const others = cluster.masters.filter((m) => m !== source && m !== target);
      for (const node of [target, source, ...others])
        await rawCommand(node.port, ['CLUSTER', 'SETSLOT', String(slot), 'NODE', targetId]);
      const settled = await waitFor(async () => {
        const owners = await Promise.all(
          cluster.masters.map(async (m) => {
            const ranges = (await rawCommand(m.port, ['CLUSTER', 'SLOTS'])) as SlotRange[];
            return ranges.find(([from, end]) => slot >= from && slot <= end)?.[2][1];
          }),
        );
        return owners.every((port) => port === target.port);
      }, 10_000);
      if (!settled) throw new Error(`slot ${slot}: not every master names ${target.port} as its owner`);
    },
    keysOn: (node) => keysOn(node),
  };
}

/** Begins, moves every key and finishes in one call: the whole reshard of `slot` to `to`. */
export async function migrateSlot(
  cluster: RedisClusterHandle,
  slot: number,
  to?: RedisServerHandle,
): Promise<SlotMigration> {
  const migration = await slotMigration(cluster, slot, to);
  await migration.begin();
  await migration.finish();
  return migration;
}

/**
 * Many empty slots of one master set migrating to another at once (CLUSTER SETSLOT IMPORTING on the target, MIGRATING
 * on the source, pipelined), for a test whose keys it cannot choose (a session id is random): a call landing in any of
 * them is redirected as in a reshard. `finish()` gives every one of them to the target. The slots must hold no key.
 */
export async function emptySlotsMigration(
  cluster: RedisClusterHandle,
  slots: readonly number[],
  source: RedisServerHandle,
  target: RedisServerHandle,
): Promise<{ begin(): Promise<void>; finish(): Promise<void> }> {
  const [sourceId, targetId] = await Promise.all([idOf(source), idOf(target)]);
  const all = async (port: number, args: (slot: number) => string[]): Promise<void> => {
    const replies = await rawCommands(port, slots.map(args), { timeoutMs: 10_000 });
    const bad = replies.find((r) => r !== 'OK');
    if (bad !== undefined) throw new Error(`CLUSTER SETSLOT on ${port} answered ${String(bad)}`);
  };
  return {
    begin: async () => {
      await all(target.port, (s) => ['CLUSTER', 'SETSLOT', String(s), 'IMPORTING', sourceId]);
      await all(source.port, (s) => ['CLUSTER', 'SETSLOT', String(s), 'MIGRATING', targetId]);
    },
    finish: async () => {
      const others = cluster.masters.filter((m) => m !== source && m !== target);
      for (const node of [target, source, ...others])
        await all(node.port, (s) => ['CLUSTER', 'SETSLOT', String(s), 'NODE', targetId]);
      const settled = await waitFor(async () => {
        const owners = await Promise.all(
          cluster.masters.map(async (m) => {
            const ranges = (await rawCommand(m.port, ['CLUSTER', 'SLOTS'])) as SlotRange[];
            return slots.every((slot) => ranges.find(([f, e]) => slot >= f && slot <= e)?.[2][1] === target.port);
          }),
        );
        return owners.every(Boolean);
      }, 10_000);
      if (!settled) throw new Error(`not every master names ${target.port} as the owner of the slots moved`);
    },
  };
}

/** Filler keys in the migrating slot written on its owner, so the move has pages of keys besides the feature's. */
export async function fillSlot(migration: SlotMigration, count: number, ttlMs = 86_400_000): Promise<void> {
  for (const key of fillerKeys(migration.slot, count))
    await rawCommand(migration.source.port, ['SET', key, 'x', 'PX', String(ttlMs)]);
}

/** A toolkit app on `cluster` (sessions on), under a key prefix of its own starting with `tag`. */
export async function reshardApp(cluster: RedisClusterHandle, tag: string, extra: Record<string, unknown> = {}) {
  const keyPrefix = `${tag}${randomBytes(3).toString('hex')}:`;
  const toolkit = await createToolkitApp({
    target: { cluster: cluster.startupNodes },
    keyPrefix,
    session: { cookie: { secret: 'reshard-secret' }, ttl: 86_400_000 },
    ...extra,
  });
  const client = toolkit.get(RedisConnection).client;
  if (!(client instanceof Cluster)) throw new Error('expected a cluster client');
  return { toolkit, client, keyPrefix };
}
