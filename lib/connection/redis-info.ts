import type { Redis } from 'ioredis';
import { InvalidOptionsError, RedisPermissionError } from '../common/errors.js';
import { classifyRedisError, replyCodeOf } from '../common/failure-policy.js';
import { withTimeout } from '../common/timeout.js';

/** The `field:value` lines of an INFO reply (section headers skipped). */
export function parseInfo(info: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of info.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0 && !line.startsWith('#')) fields[line.slice(0, colon)] = line.slice(colon + 1);
  }
  return fields;
}

/**
 * For a server whose INFO replication says `role:slave`: `a replica of host:port` (its master); undefined for a
 * master. Every feature writes, and a replica answers writes with READONLY (or, with `replica-read-only no`, keeps
 * them only until its next sync with the master).
 */
export function replicaOf(fields: Record<string, string>): string | undefined {
  if (fields.role !== 'slave') return undefined;
  const master = fields.master_host === undefined ? 'its master' : `${fields.master_host}:${fields.master_port}`;
  return `a replica of ${master}`;
}

/** What writes do on a replica (see replicaOf), for health's reason. */
export function replicaWrites(fields: Record<string, string>): string {
  return fields.slave_read_only === '0'
    ? 'writes are kept only until its next sync with the master (replica-read-only no)'
    : 'writes are refused (READONLY)';
}

/**
 * Whether the server behind `client` is a master now (INFO replication, bounded by `ms`): undefined when it refuses
 * to say (an error reply: INFO denied or renamed); rejects when it cannot be reached.
 */
export async function isMasterNow(client: Redis, ms: number): Promise<boolean | undefined> {
  if (client.status !== 'ready') throw new Error(`the connection is ${client.status}`);
  try {
    const info = await withTimeout(client.info('replication'), ms, `no answer within ${ms} ms`);
    return parseInfo(String(info)).role === 'master';
  } catch (err) {
    if (replyCodeOf(err) !== undefined) return undefined;
    throw err;
  }
}

/**
 * Why the server behind a single-server connection (`where`) is no server the toolkit can run on, from its INFO
 * (`redis_mode`, INFO server; Valkey 8 names it `server_mode` unless its extended-redis-compatibility is on): a
 * Sentinel answers none of the features' commands (the start was refused blaming rename-command lines; with
 * lazyConnect health said up while every call failed), and a cluster node answers MOVED for the keys of other nodes'
 * slots, and the toolkit's single-server batches span slots. Undefined otherwise.
 */
export function notASingleServer(fields: Record<string, string>, where: string): string | undefined {
  const field = fields.redis_mode === undefined && fields.server_mode !== undefined ? 'server_mode' : 'redis_mode';
  const mode = fields[field];
  if (mode === 'sentinel')
    return (
      `Redis at ${where} is a Sentinel (INFO server says ${field}:sentinel), not a Redis server: it runs none of ` +
      "the commands the features send. Connect through it with { sentinels: [{ host, port }], name: '<master " +
      "group name>' } (SENTINEL MASTERS lists the names), which finds the master and follows it through a failover."
    );
  if (mode === 'cluster')
    return (
      `Redis at ${where} is a node of a Redis Cluster (INFO server says ${field}:cluster), given as a single ` +
      "server: keys of other nodes' slots would be answered MOVED and the toolkit's batches across slots would " +
      'fail. Connect with { cluster: [{ host, port }, ...] }, which follows the slot map.'
    );
  return undefined;
}

/** One INFO section, bounded by `ms`; undefined when the server refuses it (an error reply: denied, renamed). */
async function infoSection(client: Redis, section: string, ms: number, where: string) {
  try {
    return parseInfo(String(await withTimeout(client.info(section), ms, `no answer within ${ms} ms`)));
  } catch (err) {
    // INFO denied (NOPERM) or unknown: the permission check names it (health needs it); nothing to learn here.
    if (replyCodeOf(err) !== undefined) return undefined;
    throw classifyRedisError(err, `Checking the Redis server at ${where}`);
  }
}

/**
 * What RedisConnection.verifyServer asks of the server behind a connected single-server client (`where` names it):
 * InvalidOptionsError for a Sentinel or a cluster node (notASingleServer), a replica or a db the server does not
 * have, RedisPermissionError for a db other than 0 whose SELECT the ACL user may not run; each command bounded by
 * `ms`. Resolves with its INFO server (undefined when refused), which the version check reads (redis-version.ts).
 */
export async function checkServer(
  client: Redis,
  where: string,
  ms: number,
): Promise<Record<string, string> | undefined> {
  const server = await infoSection(client, 'server', ms, where);
  const wrong = server === undefined ? undefined : notASingleServer(server, where);
  if (wrong !== undefined) throw new InvalidOptionsError(wrong);
  const replication = await infoSection(client, 'replication', ms, where);
  if (replication === undefined) return server;
  const replica = replicaOf(replication);
  if (replica !== undefined) {
    throw new InvalidOptionsError(
      `Redis at ${where} is ${replica} (INFO replication says role:slave): it refuses the writes every ` +
        'feature makes (cache writes would be skipped, rate limits would fail open). Point the connection at the ' +
        'master, or at Sentinel ({ sentinels, name }), which follows the master through a failover.',
    );
  }
  const db = Number(client.options.db ?? 0);
  if (db > 0) await selectDb(client, db, where, ms);
  return server;
}

/**
 * SELECTs `db` again, as ioredis did on connecting (same db: nothing changes when that worked), to learn whether it
 * worked: Redis answers a db past its `databases` with an error that ioredis only emits as an event.
 */
async function selectDb(client: Redis, db: number, where: string, ms: number): Promise<void> {
  try {
    await withTimeout(client.select(db), ms, `no answer within ${ms} ms`);
  } catch (err) {
    const code = replyCodeOf(err);
    if (code === 'NOPERM') {
      throw new RedisPermissionError(
        `The Redis ACL user at ${where} may not run SELECT, which db ${db} needs: grant +select (without it the ` +
          'app would run on db 0).',
        'NOPERM',
        { cause: err },
      );
    }
    if (code === undefined) throw classifyRedisError(err, `SELECT ${db} at ${where}`);
    const count = await withTimeout(client.config('GET', 'databases'), ms, 'no answer').then(
      (reply) => Number((reply as string[])[1]),
      () => Number.NaN, // CONFIG may be denied or renamed: the message says less
    );
    const has = Number.isInteger(count)
      ? `it has ${count} databases (0 to ${count - 1}; \`databases\` in redis.conf)`
      : 'it has fewer databases (`databases` in redis.conf; 16 by default)';
    throw new InvalidOptionsError(
      `connection db ${db} does not exist on Redis at ${where}: ${has}. Without this check the app would run on ` +
        `db 0 (${(err as Error).message}).`,
      { cause: err },
    );
  }
}
