/**
 * A real Redis Cluster made of {@link startRedisServer} cluster nodes, assembled with `redis-cli --cluster create`.
 */
import { execFile } from 'node:child_process';
import { OptionProblems, refuseUnknown, shownValue } from '../common/option-checks.js';
import { RedisServerStartError } from './testing.errors.js';
import { refuseDeniedHelpers } from './testing.permissions.js';
import { redisCliBinary, redisServerBinary } from './testing.processes.js';
import { startRedisServer, type RedisServerHandle } from './testing.redis-server.js';
import { rawCommand } from './testing.resp.js';

export interface RedisClusterOptions {
  /** Number of masters; redis-cli needs at least 3. Default 3. */
  masters?: number;
  /** Replicas per master. Default 0. */
  replicasPerMaster?: number;
}

export interface RedisClusterHandle {
  /** Every node, masters and replicas. */
  readonly nodes: RedisServerHandle[];
  /** The nodes that were masters once the cluster was formed. */
  readonly masters: RedisServerHandle[];
  /** Every node's address, for `new Cluster(startupNodes)`. */
  readonly startupNodes: { host: string; port: number }[];
  /** Stops every node. */
  stop(): Promise<void>;
  /** FLUSHALL on every master (replicas follow). */
  flush(): Promise<void>;
}

const FORM_TIMEOUT_MS = 20_000;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function runRedisCli(args: string[]): Promise<string> {
  const bin = redisCliBinary();
  return new Promise((resolve, reject) => {
    execFile(bin, args, { timeout: FORM_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (err)
        reject(
          new RedisServerStartError(
            `redis-cli ${args.join(' ')} failed: ${err.message}\nstdout:\n${stdout}\nstderr:\n${stderr}`,
          ),
        );
      else resolve(stdout);
    });
  });
}

function infoField(info: string, field: string): string | undefined {
  return new RegExp(`^${field}:(.*)$`, 'm').exec(info)?.[1]?.trim();
}

/** Why `node` is not ready yet, or undefined when it is. */
async function notReadyReason(node: RedisServerHandle, expectedNodes: number): Promise<string | undefined> {
  const info = String(await rawCommand(node.port, ['CLUSTER', 'INFO']));
  const state = infoField(info, 'cluster_state');
  const known = Number(infoField(info, 'cluster_known_nodes'));
  if (state !== 'ok') return `cluster_state:${state}`;
  // Gossip may still be spreading the node list even though the slots are covered.
  if (known !== expectedNodes) return `cluster_known_nodes:${known} (want ${expectedNodes})`;
  const replication = String(await rawCommand(node.port, ['INFO', 'replication']));
  if (infoField(replication, 'role') === 'slave' && infoField(replication, 'master_link_status') !== 'up')
    return 'replica not synced with its master';
  return undefined;
}

async function waitUntilFormed(nodes: RedisServerHandle[]): Promise<void> {
  const deadline = Date.now() + FORM_TIMEOUT_MS;
  for (;;) {
    const reasons = await Promise.all(
      nodes.map(async (node) => {
        const reason = await notReadyReason(node, nodes.length).catch((err: unknown) => String(err));
        return reason === undefined ? undefined : `${node.host}:${node.port} ${reason}`;
      }),
    );
    const pending = reasons.filter((r): r is string => r !== undefined);
    if (pending.length === 0) return;
    if (Date.now() > deadline)
      throw new RedisServerStartError(`redis cluster not ready within ${FORM_TIMEOUT_MS} ms:\n${pending.join('\n')}`);
    await sleep(100);
  }
}

async function isMaster(node: RedisServerHandle): Promise<boolean> {
  const role = await rawCommand(node.port, ['ROLE']);
  return Array.isArray(role) && role[0] === 'master';
}

/**
 * Which nodes are masters, asked again until FORM_TIMEOUT_MS: on a busy box one answer can take longer than a raw
 * command's 2 s, which must not fail a cluster that formed.
 */
async function mastersOf(nodes: RedisServerHandle[]): Promise<boolean[]> {
  const deadline = Date.now() + FORM_TIMEOUT_MS;
  for (;;) {
    try {
      return await Promise.all(nodes.map(isMaster));
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(100);
    }
  }
}

const CLUSTER_OPTIONS = new Set(['masters', 'replicasPerMaster']);
/**
 * Bounds of a test cluster: each node is a redis-server process (two ports, its own memory). Without them a count
 * of 2^32 failed with a RangeError, and a large one started that many processes.
 */
const MAX_MASTERS = 16;
const MAX_REPLICAS = 4;

/**
 * InvalidOptionsError, before any node starts, for a key it does not know (`{ replicas: 1 }` started a cluster
 * without replicas) and for counts that are not integers in range (3–MAX_MASTERS masters, 0–MAX_REPLICAS replicas).
 */
function checkClusterOptions(opts: RedisClusterOptions): void {
  const problems = new OptionProblems('startRedisCluster');
  if (!problems.object('options', opts)) problems.throwIfAny();
  refuseUnknown(opts, CLUSTER_OPTIONS, 'startRedisCluster');
  const { masters, replicasPerMaster } = opts;
  if (masters !== undefined && !(Number.isInteger(masters) && masters >= 3))
    problems.add('masters', `must be an integer >= 3 (redis-cli needs 3), got ${shownValue(masters)}`);
  else if (masters !== undefined && masters > MAX_MASTERS)
    problems.add('masters', `must be an integer from 3 to ${MAX_MASTERS} (each node is a process), got ${masters}`);
  if (replicasPerMaster !== undefined && !(Number.isInteger(replicasPerMaster) && replicasPerMaster >= 0))
    problems.add('replicasPerMaster', `must be an integer >= 0, got ${shownValue(replicasPerMaster)}`);
  else if (replicasPerMaster !== undefined && replicasPerMaster > MAX_REPLICAS)
    problems.add(
      'replicasPerMaster',
      `must be an integer from 0 to ${MAX_REPLICAS} (each node is a process), got ${replicasPerMaster}`,
    );
  problems.throwIfAny();
}

export async function startRedisCluster(opts: RedisClusterOptions = {}): Promise<RedisClusterHandle> {
  checkClusterOptions(opts);
  const masterCount = opts.masters ?? 3;
  const replicas = opts.replicasPerMaster ?? 0;

  // Both binaries (and the grants) before any node starts: a missing redis-cli or an old redis-server leaves nothing
  // to stop.
  refuseDeniedHelpers();
  redisServerBinary();
  redisCliBinary();
  const total = masterCount * (1 + replicas);
  const started = await Promise.allSettled(Array.from({ length: total }, () => startRedisServer({ cluster: true })));
  const nodes = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const stopAll = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => n.stop()));
  };

  try {
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    await runRedisCli([
      '--cluster',
      'create',
      ...nodes.map((n) => `${n.host}:${n.port}`),
      '--cluster-replicas',
      String(replicas),
      '--cluster-yes',
    ]);
    await waitUntilFormed(nodes);
    const roles = await mastersOf(nodes);
    const masters = nodes.filter((_, i) => roles[i]);
    if (masters.length !== masterCount)
      throw new RedisServerStartError(`expected ${masterCount} masters, found ${masters.length}`);
    return {
      nodes,
      masters,
      startupNodes: nodes.map((n) => ({ host: n.host, port: n.port })),
      stop: stopAll,
      flush: async () => {
        await Promise.all(masters.map((m) => m.flush()));
      },
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
