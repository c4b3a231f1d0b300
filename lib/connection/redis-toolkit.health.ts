import { Injectable } from '@nestjs/common';
import { RedisPermissionError, RedisReplyError } from '../common/errors.js';
import { classifyRedisError } from '../common/failure-policy.js';
import { withTimeout } from '../common/timeout.js';
import type { RedisConnection } from './redis-connection.js';
import { downReason } from './redis-down-reason.js';
import { notASingleServer, parseInfo, replicaOf, replicaWrites } from './redis-info.js';
import { RedisConnections } from './redis-connections.js';

/** The health of one connection. */
export interface RedisConnectionHealth {
  /**
   * `degraded`: Redis answers but refuses writes (see `reason`): maxmemory reached under `noeviction` (features that
   * write fail with RedisReplyError, OOM), or the server is a replica (READONLY: each feature's failure policy
   * answers for `readOnlyGraceMs`, then calls that write fail with RedisReplyError, READONLY), or it has answered
   * READONLY for longer than that; or PING answers and INFO is refused with an error reply (an ACL without `+info`):
   * a reply error is no outage, but role, memory and version cannot be read.
   */
  status: 'up' | 'degraded' | 'down';
  /** Round trip of one PING, ms. */
  latencyMs: number;
  /** `master`, `slave` (replica) or `cluster`. */
  role?: string;
  redisVersion?: string;
  /** Bytes, from INFO memory (summed over masters on a cluster). */
  usedMemory?: number;
  /**
   * Why it is degraded (e.g. `maxmemory reached under noeviction: writes are refused (OOM)`, `a replica of
   * 10.0.0.5:6379: writes are refused (READONLY)`).
   */
  reason?: string;
  /** Why it is down. */
  error?: string;
}

/**
 * The default connection's health; with named connections in use, `status` is the worst of all of them and
 * `connections` has each one by name (`default` included).
 */
export interface RedisToolkitHealthResult extends RedisConnectionHealth {
  /** Each configured connection, by name (`default` first): present when `connections` names any, used or not. */
  connections?: Record<string, RedisConnectionHealth>;
}

const SEVERITY = { up: 0, degraded: 1, down: 2 } as const;

/**
 * For readiness probes (`GET /health`): never throws, answers within commandTimeout even when Redis is away (PING and
 * INFO run at the same time, each bounded by commandTimeout).
 */
@Injectable()
export class RedisToolkitHealth {
  constructor(private readonly connections: RedisConnections) {}

  async check(): Promise<RedisToolkitHealthResult> {
    const entries = this.connections.entries();
    const results = await Promise.all(entries.map(([, connection]) => checkConnection(connection)));
    const [main] = results;
    if (entries.length === 1) return main;
    const byName = Object.fromEntries(entries.map(([name], i) => [name, results[i]]));
    let worst = 0;
    for (let i = 1; i < results.length; i++) {
      if (SEVERITY[results[i].status] > SEVERITY[results[worst].status]) worst = i;
    }
    const overall: RedisToolkitHealthResult = { ...main, status: results[worst].status, connections: byName };
    if (worst !== 0) {
      const [name] = entries[worst];
      const { reason, error } = results[worst];
      // Say which connection pulls the status down: the top-level fields are the default connection's.
      if (error !== undefined) overall.error = `connection "${name}": ${error}`;
      if (reason !== undefined) overall.reason = `connection "${name}": ${reason}`;
    }
    return overall;
  }
}

/**
 * PING and INFO on one connection, each bounded by commandTimeout here: a `{ client }` of the user's own has its own
 * timeouts (often none), and on a paused server its PING would wait forever. Never throws.
 */
async function checkConnection(connection: RedisConnection): Promise<RedisConnectionHealth> {
  const started = performance.now();
  const ms = connection.commandTimeout;
  let latencyMs = 0;
  try {
    const ping = withTimeout(connection.client.ping(), ms, `PING: no answer within ${ms} ms`).then(() => {
      latencyMs = Math.round((performance.now() - started) * 100) / 100;
    });
    // INFO without a section returns server, memory and replication (among others) in one round trip. Refused with
    // an error reply (NOPERM: `+info` missing from the ACL user, or renamed away), it says nothing of an outage.
    const infos = withTimeout(
      connection.masters().then((masters) => Promise.all(masters.map((node) => node.info()))),
      ms,
      `INFO: no answer within ${ms} ms`,
    ).catch((err: unknown) => {
      // a transport failure, or a reply saying Redis cannot serve (LOADING, BUSY...), is an outage
      const typed = classifyRedisError(err, 'INFO', false);
      if (!(typed instanceof RedisReplyError)) throw err;
      return typed;
    });
    const [, raw] = await Promise.all([ping, infos]);
    if (raw instanceof Error) return infoRefused(connection, latencyMs, raw);
    const fields = raw.map(parseInfo);
    // A Sentinel or a cluster node given as a single server (lazyConnect: not refused at start): every call fails.
    const wrong = connection.isCluster ? undefined : notASingleServer(fields[0] ?? {}, connection.description);
    if (wrong !== undefined) return { status: 'down', latencyMs, error: wrong };
    const full = fields.find(refusesWrites);
    // min-replicas-to-write on a master none of whose replicas is connected and in sync: every write answers
    // NOREPLICAS (an outage for the features). INFO has the count only while the setting is on; with some replicas
    // good but fewer than the setting it says nothing (the setting is CONFIG GET's, not in the ACL line).
    const noReplicas = fields.find((f) => f.min_slaves_good_slaves === '0');
    // A single server (or Sentinel's master during a failover) that is a replica: every write is refused. A
    // cluster's client sends writes to the masters of its slot table itself.
    const replica = connection.isCluster ? undefined : replicaOf(fields[0] ?? {});
    // READONLY past readOnlyGraceMs: writes fail with RedisReplyError (no failure policy) until a master answers.
    const lasting = connection.readOnlyLasting();
    const refused = lasting === undefined ? '' : `; ${lasting}: calls that write fail with RedisReplyError (READONLY)`;
    const remedy = 'point the connection at the master, or at Sentinel';
    let reason: string | undefined;
    if (replica) reason = `${replica}: ${replicaWrites(fields[0])}${refused}; ${remedy}`;
    else if (lasting) reason = `${lasting}; ${remedy}`;
    else if (full)
      reason =
        `maxmemory reached under ${full.maxmemory_policy}: writes are refused (OOM) ` +
        `(used_memory ${full.used_memory} of maxmemory ${full.maxmemory}); raise maxmemory or use an eviction ` +
        'policy';
    else if (noReplicas)
      reason =
        'writes are refused (NOREPLICAS): min-replicas-to-write is set and no replica is connected and in sync ' +
        '(INFO replication min_slaves_good_slaves:0); calls that write fail as in an outage. Bring a replica back, ' +
        'or lower min-replicas-to-write';
    return {
      status: reason ? 'degraded' : 'up',
      latencyMs,
      role: connection.isCluster ? 'cluster' : fields[0]?.role,
      redisVersion: fields[0]?.redis_version,
      usedMemory: fields.reduce((sum, f) => sum + Number(f.used_memory ?? 0), 0),
      ...(reason && { reason }),
    };
  } catch (err) {
    return {
      status: 'down',
      latencyMs: Math.round((performance.now() - started) * 100) / 100,
      error: downReason(connection, err),
    };
  }
}

/**
 * PING answered and INFO was refused with an error reply (a reply error is never an outage: every feature may still
 * work): `degraded`, naming INFO and the remedy; role, memory and version unknown. A READONLY streak past the grace
 * is still said.
 */
function infoRefused(connection: RedisConnection, latencyMs: number, err: RedisReplyError): RedisConnectionHealth {
  const remedy =
    err instanceof RedisPermissionError
      ? "grant the ACL user +info (after -@dangerous, which removes it: docs/security.md's ACL line)"
      : 'INFO must be available to the toolkit (not renamed or disabled)';
  const lasting = connection.readOnlyLasting();
  return {
    status: 'degraded',
    latencyMs,
    ...(connection.isCluster && { role: 'cluster' }),
    reason:
      `${lasting ? `${lasting}; ` : ''}${err.message}: PING answers, so this is no outage, ` +
      `but health cannot read the role, memory or version; ${remedy}`,
  };
}

/**
 * A server over its maxmemory under `noeviction` refuses every write with OOM (under an eviction policy it evicts
 * instead). Redis compares used memory less replication and AOF buffers (`mem_not_counted_for_evict`) with it.
 */
function refusesWrites(f: Record<string, string>): boolean {
  const max = Number(f.maxmemory ?? 0);
  const counted = Number(f.used_memory ?? 0) - Number(f.mem_not_counted_for_evict ?? 0);
  return max > 0 && f.maxmemory_policy === 'noeviction' && counted > max;
}
