import { Cluster } from 'ioredis';
import { slotMasters } from '../common/cluster-masters.js';
import { UnsupportedRedisVersionError } from '../common/errors.js';
import { replyCodeOf } from '../common/failure-policy.js';
import { onNodeConnection } from './cluster-nodes.js';
import { DEFAULT_CONNECTION_NAME } from './connection.options.js';
import type { ConnectionFeature } from './connection.validation.js';
import type { RedisConnection } from './redis-connection.js';
import { parseInfo } from './redis-info.js';
import { abortAfter } from './redis-permissions.cluster.js';

/** The oldest Redis a feature runs on, and the command that decides it (named in the refusal). */
export interface VersionNeed {
  /** As the permission check names it: `session`, `pub/sub`, `rate limit`. */
  readonly feature: string;
  /** `major.minor`: `7.0`. */
  readonly minimum: string;
  /** The newest command (or argument) the feature sends: `PEXPIRETIME`. */
  readonly command: string;
  /** Where it is sent, and the feature's other commands of that age. */
  readonly why: string;
}

/**
 * What each feature needs of the server, from the Redis version that added the newest command or argument it sends
 * (redis-permissions.commands.ts lists the commands; Redis's command pages give each one's version): one line per
 * feature rather than one number for the toolkit, so a connection that only the cache runs on (a volatile Redis 6.2
 * beside a 7.x for the rest) starts. A feature that starts sending a newer command raises its line here.
 */
const FEATURE_NEEDS: Readonly<Record<ConnectionFeature, VersionNeed>> = {
  cache: { feature: 'cache', minimum: '6.0', command: 'SET ... KEEPTTL', why: "soft tag invalidation's soften.lua" },
  rateLimit: {
    feature: 'rate limit',
    minimum: '6.0',
    command: 'SET ... KEEPTTL',
    why: 'reward.lua; ZPOPMAX and scripts that write after TIME need 5.0',
  },
  session: {
    feature: 'session',
    minimum: '7.0',
    command: 'PEXPIRETIME',
    why: 'and PEXPIREAT ... LT; GETEX, SET ... PXAT and ZRANDMEMBER need 6.2',
  },
  lock: {
    feature: 'lock',
    minimum: '5.0',
    command: 'ZPOPMIN',
    why: 'release-many.lua, wake.lua; and scripts that write after TIME, replicated by their effects from 5.0',
  },
  // With `pubsub.durable` (and where it is not known): without it, PUBSUB_NOT_DURABLE.
  pubsub: {
    feature: 'pub/sub',
    minimum: '6.2',
    command: 'XRANGE',
    why: "and XREVRANGE from an exclusive id, `(id`: replay of pubsub.durable's streams",
  },
};

/**
 * Pub/sub without `pubsub.durable` (pubsubDurable: false): no stream is written or read (replay answers [] unasked), so
 * what decides is the PING that confirms the subscriber's return after a reconnect (pubsub.reconnects.ts; Redis
 * answers PING in subscribed mode from 3.0), not the durable replay's 6.2.
 */
const PUBSUB_NOT_DURABLE: VersionNeed = {
  feature: 'pub/sub',
  minimum: '3.0',
  command: 'PING on a subscribed connection',
  why: "after a reconnect; PUBLISH, SUBSCRIBE, PSUBSCRIBE and the batched publishes' EVAL are older",
};

/** Sharded pub/sub: a cluster with `pubsub.cluster: 'sharded'` (the default), for pub/sub and the cache L1's bus. */
const SHARDED_NEED = {
  minimum: '7.0',
  command: 'SPUBLISH',
  why: "and SSUBSCRIBE: pubsub.cluster 'sharded', the default on a cluster",
} as const;

export interface VersionNeedsOptions {
  /** Pub/sub (and the cache L1's bus) is sharded: a cluster with `pubsub.cluster: 'sharded'`. */
  sharded: boolean;
  /** The cache has an L1 (it publishes and subscribes its invalidations; `auto` may fall back to that bus). */
  cacheL1?: boolean;
  /** `pubsub.durable` is set (its replay reads streams: XRANGE, 6.2); not known (undefined): asked as if it were. */
  pubsubDurable?: boolean;
}

/** What the features running on one connection need of its server(s). */
export function versionNeeds(features: readonly ConnectionFeature[], options: VersionNeedsOptions): VersionNeed[] {
  const needs: VersionNeed[] = [];
  for (const f of features) {
    needs.push(f === 'pubsub' && options.pubsubDurable === false ? PUBSUB_NOT_DURABLE : FEATURE_NEEDS[f]);
    const bus = f === 'pubsub' || (f === 'cache' && options.cacheL1 === true);
    if (options.sharded && bus) needs.push({ feature: FEATURE_NEEDS[f].feature, ...SHARDED_NEED });
  }
  return needs;
}

/** `7.0.15` → [7, 0, 15] (`7.0.0-rc1`: [7, 0, 0]); undefined for what is no version. */
function parseVersion(text: string): number[] | undefined {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(text.trim());
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : undefined;
}

/** Compared number by number: `10.0` is newer than `7.0`, which text order says it is not. */
function older(version: number[], than: number[]): boolean {
  for (let i = 0; i < than.length; i++) {
    const a = version[i] ?? 0;
    if (a !== than[i]) return a < than[i];
  }
  return false;
}

/** The needs a server reporting `version` does not meet (none when `version` is no version: no verdict). */
export function unmetNeeds(needs: readonly VersionNeed[], version: string): VersionNeed[] {
  const reported = parseVersion(version);
  if (reported === undefined) return [];
  return needs.filter((n) => older(reported, parseVersion(n.minimum) as number[]));
}

/**
 * The version to compare from INFO server, and how to show it. Valkey reports `valkey_version` and, in
 * `redis_version`, the Redis it is compatible with (7.2.4 for every release): that one is compared with the features'
 * Redis minimums; `valkey_version` only where `redis_version` is missing. `version` undefined: neither reads as one.
 */
export function serverVersionOf(fields: Record<string, string>): { version: string | undefined; shown: string } {
  const redis = fields.redis_version;
  const valkey = fields.valkey_version;
  const version = [redis, valkey].find((v) => v !== undefined && parseVersion(v) !== undefined);
  if (valkey !== undefined)
    return { version, shown: redis === undefined ? `Valkey ${valkey}` : `Valkey ${valkey} (redis_version ${redis})` };
  return { version, shown: redis === undefined ? 'no redis_version' : `redis_version ${redis}` };
}

/**
 * One server behind a connection: how the start names it, and its INFO server (undefined: INFO refused, or `failure`:
 * no answer).
 */
export interface ServerInfo {
  where: string;
  fields: Record<string, string> | undefined;
  failure?: string;
}

/**
 * The INFO server of each server behind `connection`: for a single server (Sentinel's master too) the one its server
 * check already read (RedisConnection.verifyServer: no round trip of its own; a transport failure rejects there); for
 * a cluster, each master's of the slot table, on a connection of its own within the toolkit's timeouts, as the
 * permission check that follows asks them (cluster-nodes.ts). An error reply (INFO denied or renamed) leaves a server
 * unread; a master that does not answer is no verdict here: the permission check that follows asks it again (three
 * attempts) and fails the start naming it.
 */
async function serversOf(connection: RedisConnection): Promise<ServerInfo[]> {
  const client = connection.client;
  if (!(client instanceof Cluster)) {
    const fields = await connection.verifyServer();
    // The address too where the description lacks it: Sentinel's master (the one it resolved, by the address it is
    // connected to) and a `{ client }`.
    const sentinel = (client.options.sentinels?.length ?? 0) > 0;
    const address = sentinel
      ? `${client.stream?.remoteAddress}:${client.stream?.remotePort}`
      : `${client.options.host ?? '127.0.0.1'}:${client.options.port ?? 6379}`;
    const where = connection.description.includes(address)
      ? connection.description
      : `${connection.description} (${sentinel ? 'the master at ' : ''}${address})`;
    return [{ where, fields }];
  }
  const { connectTimeout, commandTimeout } = connection;
  const named = connection.name === DEFAULT_CONNECTION_NAME ? '' : ` (connection "${connection.name}")`;
  const limit = abortAfter(connection.startBudget);
  const bound = { connectTimeout, commandTimeout, signal: limit.signal };
  try {
    return await Promise.all(
      slotMasters(client).map(async (node): Promise<ServerInfo> => {
        const where = `cluster master ${node.host}:${node.port}${named}`;
        try {
          const info = await onNodeConnection(client, node, (c) => c.info('server'), bound);
          return { where, fields: parseInfo(String(info)) };
        } catch (err) {
          const failure = replyCodeOf(err) === undefined ? (err as Error).message : undefined;
          return { where, fields: undefined, failure };
        }
      }),
    );
  } finally {
    limit.done();
  }
}

/** Whether version `a` is newer than `b` (both `major.minor`). */
const newer = (a: string, b: string): boolean => older(parseVersion(b) as number[], parseVersion(a) as number[]);

const describeNeed = (n: VersionNeed): string => `${n.feature} needs Redis >= ${n.minimum} (${n.command}, ${n.why})`;

/**
 * At start, before the permission check: refuses a server older than what the features on `connection` need
 * (`needs`), with UnsupportedRedisVersionError naming each such feature, the command, the minimum and what the
 * server reported (every master of a cluster is asked: one of another version, mid-upgrade, is named). Without it
 * such a server failed the feature's first call (an error reply for a command or argument it does not know), or the
 * permission probe of Redis < 7 refused the start blaming rename-command for the commands it lacks. A server whose
 * INFO has no version (a proxy, a fork) is one warning naming what the features need; one whose INFO is refused
 * (NOPERM, renamed) is left to the permission check, which refuses the start naming INFO (health needs it). Checked
 * once, at start: a server that becomes older later (a failover to an older replica) is not seen.
 */
export async function checkRedisVersion(
  connection: RedisConnection,
  needs: readonly VersionNeed[],
  warn: (message: string) => void,
): Promise<void> {
  if (needs.length > 0) versionVerdict(await serversOf(connection), needs, warn);
}

/** What the message of a refusal offers besides an upgrade, by default. */
const ANOTHER_CONNECTION =
  "run those features on a connection of their own to a newer server (`connections` and the feature's `connection` " +
  'option: docs/connections.md)';

/**
 * checkRedisVersion's verdict on servers already read: UnsupportedRedisVersionError for one older than `needs`, a
 * warning for one whose version could not be read. Also a lock quorum node's (lock.quorum-nodes.ts), which `instead`
 * offers another way out than another connection.
 */
export function versionVerdict(
  servers: readonly ServerInfo[],
  needs: readonly VersionNeed[],
  warn: (message: string) => void,
  instead = ANOTHER_CONNECTION,
): void {
  const tooOld: { where: string; version: string; shown: string; unmet: VersionNeed[] }[] = [];
  const unread: string[] = [];
  for (const { where, fields, failure } of servers) {
    if (failure !== undefined) unread.push(`${where} (${failure})`);
    if (fields === undefined) continue; // INFO refused: the permission check that follows refuses it, naming INFO
    const { version, shown } = serverVersionOf(fields);
    if (version === undefined) unread.push(`${where} (INFO server has ${shown})`);
    else {
      const unmet = unmetNeeds(needs, version);
      if (unmet.length > 0) tooOld.push({ where, version, shown, unmet });
    }
  }
  if (tooOld.length > 0) {
    // The fields name the newest version any server lacks (the first server on a tie), the message every one.
    const pairs = tooOld.flatMap((server) => server.unmet.map((need) => ({ server, need })));
    const { server, need } = pairs.reduce((a, b) => (newer(b.need.minimum, a.need.minimum) ? b : a));
    const each = tooOld.map((s) => `Redis at ${s.where} reports ${s.shown}: ${s.unmet.map(describeNeed).join('; ')}`);
    throw new UnsupportedRedisVersionError(
      `${each.join('. ')}. Their calls would fail (the server does not know those commands or arguments). Upgrade ` +
        `the server to Redis >= ${need.minimum}, or ${instead}.`,
      {
        feature: need.feature,
        command: need.command,
        minimum: need.minimum,
        reported: server.version,
        server: server.where,
      },
    );
  }
  if (unread.length > 0) {
    const need = needs.reduce((a, b) => (newer(b.minimum, a.minimum) ? b : a));
    const features = [...new Set(needs.filter((n) => n.minimum === need.minimum).map((n) => n.feature))];
    warn(
      `Could not read the Redis version of ${unread.join(', ')}: the features on it need Redis >= ${need.minimum} ` +
        `(${features.join(', ')}: ${need.command}); on an older server their calls fail instead of the start. Check ` +
        `that the server is Redis >= ${need.minimum}.`,
    );
  }
}
