import type { Redis } from 'ioredis';
import { InvalidOptionsError, RedisUnavailableError } from '../common/errors.js';
import { withTimeout } from '../common/timeout.js';
import { checkServer, parseInfo, replicaOf } from '../connection/redis-info.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { versionNeeds, versionVerdict } from '../connection/redis-version.js';

/** A quorum node's client, and how messages name it (its address, no password). */
export interface QuorumNode {
  client: Redis;
  description: string;
}

/** Connects every quorum node; start-up fails unless a majority answers (a minority may be down). */
export async function connectQuorum(
  connection: RedisConnection,
  nodes: readonly QuorumNode[],
  warn: (message: string) => void,
): Promise<void> {
  const ready = await Promise.all(
    nodes.map(({ client }) =>
      // A node down at start keeps reconnecting in the background: a minority may come back later.
      connection.waitUntilReady(client).then(
        () => undefined,
        (err: unknown) => (err instanceof Error ? err.message : String(err)),
      ),
    ),
  );
  const down = ready.flatMap((err, i) => (err === undefined ? [] : [`${nodes[i].description} (${err})`]));
  const quorum = Math.floor(nodes.length / 2) + 1;
  if (nodes.length - down.length < quorum) {
    // The app is not going to start: stop every node's reconnect loop.
    for (const { client } of nodes) client.disconnect();
    throw new RedisUnavailableError(
      `Cannot reach a majority (${quorum} of ${nodes.length}) of the lock.quorum.nodes: ${down.join(', ')}. ` +
        'Check that the servers are running, or set lazyConnect: true to start without them.',
    );
  }
  if (down.length > 0) warn(`lock quorum nodes unreachable at start (a minority, locks work): ${down.join(', ')}`);
}

/**
 * Refuses two quorum nodes that are one Redis server (the same `run_id`: one address spelled twice, `localhost` and
 * `127.0.0.1`, a proxy in front of it): that server would hold two votes, so it alone could grant a lock of three
 * "nodes", and its restart would lose a majority. A node that denies INFO is named in a warning. Returns the `run_id`
 * read of each node (NodeCheck compares a node that connects later with them).
 */
export async function checkDistinctNodes(
  nodes: readonly QuorumNode[],
  warn: (message: string) => void,
): Promise<Map<Redis, string>> {
  const seen = new Map<string, string>();
  const runIds = new Map<Redis, string>();
  const duplicates: string[] = [];
  for (const { client, description } of nodes) {
    if (client.status !== 'ready') continue;
    let runId: string | undefined;
    try {
      runId = parseInfo(String(await client.info('server'))).run_id;
    } catch (err) {
      warn(`lock quorum node ${description}: cannot read INFO to check it is a distinct server (${String(err)})`);
      continue;
    }
    if (!runId) continue;
    runIds.set(client, runId);
    const first = seen.get(runId);
    if (first === undefined) seen.set(runId, description);
    else duplicates.push(`${first} and ${description}`);
  }
  if (duplicates.length > 0) {
    throw new InvalidOptionsError(
      `lock.quorum.nodes must be distinct Redis servers: ${duplicates.join('; ')} are one server (same run_id), ` +
        'which would then cast two votes of the quorum.',
    );
  }
  return runIds;
}

/**
 * Refuses a quorum node the locks would fail on at first use, as RedisConnection.verifyServer refuses the main server
 * (checkServer): a replica (it answers each acquisition READONLY, so its vote is lost) and a db the server does not
 * have (ioredis's SELECT failed with only an error event, and its locks went to db 0) are InvalidOptionsErrors naming
 * the node; a db other than 0 whose SELECT the ACL user may not run is a RedisPermissionError. A node that does not
 * answer is named in a warning (a minority may be down) and returned: its NodeCheck asks again before a lock call
 * reaches it.
 */
export async function checkQuorumNodeServers(
  nodes: readonly QuorumNode[],
  ms: number,
  warn: (message: string) => void,
): Promise<Set<Redis>> {
  const unanswered = new Set<Redis>();
  for (const { client, description } of nodes) {
    if (client.status !== 'ready') continue;
    try {
      await checkQuorumNode(client, description, ms, warn);
    } catch (err) {
      if (!(err instanceof RedisUnavailableError)) throw err;
      unanswered.add(client);
      warn(
        `lock quorum node ${description}: could not check the server (${err.message}); asked again before a lock ` +
          'call reaches it',
      );
    }
  }
  return unanswered;
}

/**
 * One node's check (checkQuorumNodeServers, and NodeCheck on its first `ready`); RedisUnavailableError when it did not
 * answer: no verdict. Its version too, from the INFO server checkServer reads: UnsupportedRedisVersionError below the
 * lock's 5.0 (ZPOPMIN, scripts that write after TIME), as on the lock's connection; `warn` when INFO has no version.
 * Until 2026-12-06 quorum nodes were not version-checked: an older node failed every lock call it took part in.
 */
export async function checkQuorumNode(
  client: Redis,
  description: string,
  ms: number,
  warn: (message: string) => void,
): Promise<void> {
  const where = `lock quorum node ${description}`;
  const replica = await withTimeout(client.info('replication'), ms, `no answer within ${ms} ms`).then(
    (info) => replicaOf(parseInfo(String(info))),
    () => undefined, // checkServer below tells a denial (skipped) from no answer
  );
  if (replica !== undefined) {
    throw new InvalidOptionsError(
      `Redis at ${where} is ${replica} (INFO replication says role:slave): it refuses the lock's writes ` +
        '(READONLY), so it would never grant a lock and the quorum would lose its vote. List independent masters ' +
        'in lock.quorum.nodes, not replicas.',
    );
  }
  const fields = await checkServer(client, where, ms);
  // INFO refused (undefined): the permission check of the lock's commands that follows names it
  if (fields === undefined) return;
  const instead = 'list a newer server in lock.quorum.nodes';
  versionVerdict([{ where, fields }], versionNeeds(['lock'], { sharded: false }), warn, instead);
}
