import { Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { Cluster, type Redis } from 'ioredis';
import { RedisUnavailableError } from '../common/errors.js';
import { classifyRedisError, replyCodeOf } from '../common/failure-policy.js';
import { MAX_TIMER_MS } from '../common/timeout.js';
import { ACL_CHECK } from '../common/acl-check.js';
import type { RedisClient } from '../common/lua-script.js';
import { DEFAULT_CONNECTION_NAME } from './connection.options.js';
import type { ConnectionFeature } from './connection.validation.js';
import type { RedisConnection } from './redis-connection.js';
import type { RedisConnections } from './redis-connections.js';
import {
  requiredCommands,
  throwIfDenied,
  type CacheL1Check,
  type RequiredCommand,
} from './redis-permissions.commands.js';
import { abortAfter, askMasters } from './redis-permissions.cluster.js';
import { readyAgain } from './client-lifecycle.js';
import { probePermissions } from './redis-permissions.probe.js';
import { checkRedisVersion, versionNeeds } from './redis-version.js';

export type { RequiredCommand };
export { requiredCommands };

/** What `checkPermissions` found: the denied commands, and how they were checked. */
export interface PermissionReport {
  denied: RequiredCommand[];
  /**
   * `dryrun` (ACL DRYRUN), `script` (redis.acl_check_cmd in a script), `probe` (each command run on a probe key:
   * Redis < 7), `scripting-denied`.
   */
  method: 'dryrun' | 'script' | 'probe' | 'scripting-denied';
  /** Commands the probe cannot check (no script may run them: SUBSCRIBE...). */
  unchecked?: RequiredCommand[];
  /** Commands the server does not know: renamed or disabled with `rename-command` (no ACL rule grants them). */
  unknown?: RequiredCommand[];
}

/**
 * What Redis answers for a command it does not know (renamed or disabled with rename-command): ACL DRYRUN's
 * `Command 'x' not found`, acl_check_cmd's `Invalid command passed to ...`, and the command's own `unknown command`.
 */
export const UNKNOWN_COMMAND = /unknown command|Command '[^']*' not found|Invalid command passed/i;
const isUnknown = (reply: unknown): boolean =>
  UNKNOWN_COMMAND.test(reply instanceof Error ? reply.message : typeof reply === 'string' ? reply : '');

/**
 * Asks Redis whether the connected ACL user may run each command: `ACL DRYRUN <user> ...` when the user may run
 * ACL WHOAMI and ACL DRYRUN (Redis >= 7), else `redis.acl_check_cmd` inside one script (which needs only EVAL /
 * EVALSHA, themselves required). Nothing runs and nothing is written.
 */
export async function checkPermissions(
  client: RedisClient,
  commands: RequiredCommand[],
  /** `probe`: what a server without ACL DRYRUN and redis.acl_check_cmd gets (Redis < 7), forced (tests). */
  method: 'auto' | 'probe' = 'auto',
  /** false on one node of a cluster: the probe writes a key that node may not own, so give up (undefined) instead. */
  allowProbe = true,
): Promise<PermissionReport | undefined> {
  if (method === 'probe') return allowProbe ? probe(client, commands) : undefined;
  try {
    const user = String(await client.call('acl', 'whoami'));
    const replies = await Promise.all(
      commands.map((c) =>
        client.call('acl', 'dryrun', user, ...c.args).then(
          (r) => String(r),
          (err: unknown) => err,
        ),
      ),
    );
    const failed = replies.find((r) => r instanceof Error && !isUnknown(r));
    if (failed) throw failed;
    const unknown = commands.filter((_, i) => isUnknown(replies[i]));
    return {
      method: 'dryrun',
      denied: commands.filter((_, i) => replies[i] !== 'OK' && !isUnknown(replies[i])),
      unknown,
    };
  } catch (err) {
    // NOPERM (an application user may not run ACL commands) or Redis < 7: try the script.
    if (replyCodeOf(err) === undefined) throw err;
  }
  let answers: (number | string)[];
  try {
    answers = await ACL_CHECK.run(
      client,
      [],
      commands.flatMap((c) => [String(c.args.length), ...c.args]),
    );
  } catch (err) {
    const code = replyCodeOf(err);
    if (code === 'NOPERM') {
      return {
        method: 'scripting-denied',
        denied: commands.filter((c) => c.args[0] === 'eval' || c.args[0] === 'evalsha'),
      };
    }
    const unknown = scriptsUnknown(err, commands);
    if (unknown) return unknown;
    if (code !== undefined) return allowProbe ? probe(client, commands) : undefined; // no acl_check_cmd: Redis < 7
    throw err;
  }
  return {
    method: 'script',
    denied: commands.filter((_, i) => answers[i] !== 1 && !isUnknown(answers[i])),
    unknown: commands.filter((_, i) => isUnknown(answers[i])),
  };
}

/** EVAL or EVALSHA itself unknown to the server (rename-command): no script runs, so nothing else can be checked. */
function scriptsUnknown(err: unknown, commands: RequiredCommand[]): PermissionReport | undefined {
  const renamed = /unknown command '([^']+)'/i.exec(String((err as Error)?.message))?.[1]?.toLowerCase();
  if (renamed !== 'eval' && renamed !== 'evalsha') return undefined;
  return { method: 'scripting-denied', denied: [], unknown: commands.filter((c) => c.args[0] === renamed) };
}

async function probe(client: RedisClient, commands: RequiredCommand[]): Promise<PermissionReport> {
  try {
    return { method: 'probe', ...(await probePermissions(client, commands)) };
  } catch (err) {
    const unknown = scriptsUnknown(err, commands);
    if (unknown) return unknown;
    if (replyCodeOf(err) !== 'NOPERM') throw err;
    // The probe script's own key (under the prefix) is denied: so is every command on a key there.
    if (/\bkeys?\b/i.test((err as Error).message)) {
      return { method: 'probe', denied: commands.filter((c) => c.args.some((a) => a.endsWith('{acl:check}'))) };
    }
    return {
      method: 'scripting-denied',
      denied: commands.filter((c) => c.args[0] === 'eval' || c.args[0] === 'evalsha'),
    };
  }
}

export interface PermissionsCheckOptions {
  keyPrefix: string;
  lazyConnect: boolean;
  /** Pub/sub uses SPUBLISH/SSUBSCRIBE on a cluster (`pubsub.cluster: 'sharded'`). */
  shardedPubSub: boolean;
  /** The cache's `l1.invalidation`; none without an L1. */
  cacheL1?: CacheL1Check;
  /** `pubsub.durable` is set (its replay needs Redis 6.2: versionNeeds); not given: the version check assumes it. */
  pubsubDurable?: boolean;
  /** `probe`: check as on a server without ACL DRYRUN and redis.acl_check_cmd (Redis < 7); for tests. */
  method?: 'auto' | 'probe';
}

/** Attempts of the start-up check when the server does not answer (each bounded by commandTimeout). */
export const CHECK_ATTEMPTS = 3;

/** What one server must allow, and how to name it in the error. */
export interface PermissionsTarget {
  client: RedisClient;
  keyPrefix: string;
  cluster: boolean;
  sharded: boolean;
  /** The cache's `l1.invalidation` (only where the cache runs); none without an L1. */
  cacheL1?: CacheL1Check;
  /** `pubsub.durable` is set (see requiredCommands). */
  pubsubDurable?: boolean;
  /** Only these features' commands, and health's (e.g. `['lock']` on a quorum node); default every feature. */
  features?: ConnectionFeature[];
  /** ` of connection "x" (...)`, ` on the lock quorum node redis://...`; default nothing (the main connection). */
  where?: string;
  method?: 'auto' | 'probe';
  /**
   * The toolkit's timeouts, over a `{ client }` Cluster's own (maybe far longer): each master's connection keeps to
   * them, and with `within` (ms) the whole check, every attempt, ends within that (the start's: RedisPermissionsCheck).
   */
  bound?: { connectTimeout: number; commandTimeout: number; within?: number };
}

/**
 * Throws RedisPermissionError naming the server, every denied command (with the feature and script that need it)
 * and the ACL rules that grant them; resolves when the user may run all of them. Commands the probe of Redis < 7
 * cannot check are named in a warning.
 */
export async function verifyPermissions(target: PermissionsTarget, warn: (message: string) => void): Promise<void> {
  const within = target.bound?.within;
  const limit = within === undefined ? undefined : abortAfter(within);
  const deadline = Date.now() + (within ?? MAX_TIMER_MS);
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        return await checkAndReport(target, warn, limit?.signal);
      } catch (err) {
        // A transport failure during the check (a command timed out on a busy server) is RedisUnavailableError like
        // any other start-up call, never ioredis's untyped error. It is no verdict on the permissions: the check asks
        // a few dozen commands at once, so one slow moment of a busy server (a deploy under load) would otherwise
        // fail the start. It is asked again, each time said in a warning, while `within` lasts; a denial never is.
        const typed = classifyRedisError(err, `Redis ACL permission check${target.where ?? ''}`);
        const over = attempt >= CHECK_ATTEMPTS || limit?.signal.aborted === true;
        if (!(typed instanceof RedisUnavailableError) || over) throw typed;
        warn(`${typed.message}; checking again (attempt ${attempt + 1} of ${CHECK_ATTEMPTS})`);
        await readyAgain(target.client, deadline - Date.now());
      }
    }
  } finally {
    limit?.done();
  }
}

async function checkAndReport(
  target: PermissionsTarget,
  warn: (message: string) => void,
  signal?: AbortSignal,
): Promise<void> {
  const { keyPrefix, where = '' } = target;
  const commands = requiredCommands(keyPrefix, target);
  // ACL users are per node: a cluster does not propagate ACL SETUSER, so one master can deny what the others allow.
  // Each master of the slot table is checked on a connection of the check's own (a keyless check), within the
  // toolkit's timeouts (`bound`: a master that answers nothing fails the attempt naming it, also on a `{ client }`
  // Cluster with longer timeouts of its own); where that needs the probe (Redis < 7), the cluster client checks once.
  if (target.client instanceof Cluster && target.method !== 'probe') {
    const check = (c: Redis) => checkPermissions(c, commands, 'auto', false);
    const checked = await askMasters(target.client, check, { ...target.bound, signal });
    if (checked) {
      for (const { node, report } of checked)
        throwIfDenied(report, keyPrefix, `${where} on the cluster master ${node.host}:${node.port}`, warn);
      return;
    }
  }
  const report = await checkPermissions(target.client, commands, target.method);
  throwIfDenied(report as PermissionReport, keyPrefix, where, warn);
}

/**
 * At startup, after the connections are up: refuses to start when a server of a connection is older than a feature
 * running on it needs (UnsupportedRedisVersionError: redis-version.ts), then (RedisPermissionError naming every denied
 * command and the ACL rules that grant them) when the ACL user of a connection lacks a permission that a feature
 * running on it needs. Without the check, a missing `+time` or `+@scripting` would only show at the first request
 * (issue 17). With lazyConnect the checks of the server (RedisConnection.verifyServer), its version and the ACL run
 * each time a connection becomes ready until they have given a verdict, and a refusal is logged as an error instead;
 * shutdown stops them.
 */
export class RedisPermissionsCheck implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('RedisToolkit');
  /** lazyConnect: removes each connection's `ready` listener (on its verdict, or at shutdown). */
  private readonly pending = new Set<() => void>();
  private closed = false;

  constructor(
    private readonly connections: RedisConnections,
    private readonly options: PermissionsCheckOptions,
  ) {}

  async onModuleInit(): Promise<void> {
    const all = this.connections.entries();
    if (this.options.lazyConnect) {
      for (const [name, connection] of all) this.checkWhenReady(name, connection);
      return;
    }
    try {
      await Promise.all(
        all.map(async ([name, connection]) => {
          const deadline = Date.now() + connection.startBudget; // the connect and the check share it
          await connection.connect(connection.client, connection.description);
          await this.checkVersion(name, connection);
          await this.check(name, connection, deadline - Date.now());
        }),
      );
    } catch (err) {
      // The app is not going to start: close our connections, so nothing keeps retrying (or the process alive).
      await this.connections.onApplicationShutdown();
      throw err;
    }
  }

  onApplicationShutdown(): void {
    this.closed = true;
    for (const stop of this.pending) stop();
    this.pending.clear();
  }

  /**
   * lazyConnect: Redis may come up long after the start, so no deadline: the checks run on the connection's `ready`
   * (at once when it is ready already). A transport failure is no verdict (logged; asked again on the next `ready`);
   * a verdict (passed, or a refusal logged as an error) ends it.
   */
  private checkWhenReady(name: string, connection: RedisConnection): void {
    const client = connection.client;
    let running = false;
    const stop = () => {
      client.off('ready', run);
      this.pending.delete(stop);
    };
    const run = () => {
      if (running || this.closed) return;
      running = true;
      connection
        .verifyServer()
        .then(() => this.checkVersion(name, connection))
        .then(() => this.check(name, connection))
        .then(stop, (err: unknown) => {
          running = false;
          if (this.closed) return;
          const message = err instanceof Error ? err.message : String(err);
          if (err instanceof RedisUnavailableError) {
            this.logger.error(`${message.replace(/\.$/, '')}; checked again when the connection is next ready`);
            return;
          }
          stop();
          this.logger.error(message);
        });
    };
    this.pending.add(stop);
    client.on('ready', run);
    if (client.status === 'ready') run();
  }

  /** UnsupportedRedisVersionError when a server of this connection is older than a feature on it needs. */
  checkVersion(name: string, connection: RedisConnection): Promise<void> {
    const features = this.connections.featuresOn(name);
    const sharded = connection.isCluster && this.options.shardedPubSub;
    const { cacheL1, pubsubDurable } = this.options;
    const needs = versionNeeds(features, { sharded, cacheL1: !!cacheL1, pubsubDurable });
    return checkRedisVersion(connection, needs, (m) => {
      if (!this.closed) this.logger.warn(m);
    });
  }

  /**
   * Throws RedisPermissionError when a command that a feature on this connection needs is denied; resolves
   * otherwise. Lock quorum nodes are checked by the lock feature (LockService), with the lock's commands.
   */
  check(name: string, connection: RedisConnection, within?: number): Promise<void> {
    const { connectTimeout, commandTimeout } = connection;
    // At least commandTimeout: a connection that came up at the end of its budget still gets one attempt.
    const bound = {
      connectTimeout,
      commandTimeout,
      within: within === undefined ? undefined : Math.max(within, commandTimeout),
    };
    return verifyPermissions(
      {
        client: connection.client,
        keyPrefix: this.options.keyPrefix,
        cluster: connection.isCluster,
        sharded: connection.isCluster && this.options.shardedPubSub,
        features: this.connections.featuresOn(name),
        cacheL1: this.options.cacheL1,
        pubsubDurable: this.options.pubsubDurable,
        where: name === DEFAULT_CONNECTION_NAME ? '' : ` of connection "${name}" (${connection.description})`,
        method: this.options.method,
        bound,
      },
      (m) => {
        if (!this.closed) this.logger.warn(m);
      },
    );
  }
}
