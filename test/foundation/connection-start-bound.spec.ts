/**
 * docs/connections.md (start): a start that cannot reach Redis fails within the toolkit's connectTimeout +
 * commandTimeout, also on a `{ client }` of the user's whose own timeouts are far longer. Here the toolkit's budget is
 * 1 s + 0.5 s and the user's client waits 20 s for an answer: a start that rejects before 10 s kept to the toolkit's
 * budget (with room for a slow machine); one that waited for the user's timeout rejects after 20 s at the earliest.
 * The server accepts connections and answers nothing (SIGSTOP): no error event ends anything early.
 */
import 'reflect-metadata';
import { readFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { Cluster, Redis } from 'ioredis';
import { RedisPermissionError, RedisUnavailableError } from '../../lib/index.js';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const BUDGET = { connectTimeout: 1_000, commandTimeout: 500 }; // the toolkit's: 1500 ms
const USERS_TIMEOUT = 20_000; // the client's own commandTimeout (and a cluster's slotsRefreshTimeout)
const FAR_BELOW_USERS = 10_000;

/** A local port nothing listens on (connections to it are refused). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** The start's error, and how long it took to reject (ms). */
async function failedStart(client: Redis | Cluster): Promise<{ err: unknown; ms: number }> {
  const started = Date.now();
  const err = await createToolkitApp({ target: { client }, ...BUDGET }).then(
    () => undefined,
    (e: unknown) => e,
  );
  return { err, ms: Date.now() - started };
}

describe("a start that cannot reach Redis rejects within the toolkit's connectTimeout + commandTimeout", () => {
  const redis = usePrivateRedis();

  afterEach(() => {
    redis.server.resume();
  });

  /** A user's Cluster client whose startup nodes are `ports`, with the user's long timeouts and no retry. */
  async function userCluster(ports: number[]): Promise<Cluster> {
    const cluster = trackForCleanup(
      new Cluster(
        ports.map((port) => ({ host: '127.0.0.1', port })),
        {
          redisOptions: { commandTimeout: USERS_TIMEOUT },
          slotsRefreshTimeout: USERS_TIMEOUT,
          clusterRetryStrategy: () => null,
        },
      ),
    );
    cluster.on('error', () => undefined); // the user's own
    expect(await waitFor(() => cluster.listenerCount('refresh') === 1, 5_000)).toBe(true);
    expect(cluster.status).toBe('connecting');
    return cluster;
  }

  // Before: once the wait gave up (1.5 s), the start asked the first startup node, on a connection of its own with
  // the cluster's redisOptions, why the cluster never became ready (the ACL check of ioredis's ready check): CLUSTER
  // INFO, then CLIENT SETNAME, each waiting the user's 20 s on the paused node; the start rejected after ~41.5 s.
  it.each([
    ['the paused server first, then a refused port', ['paused', 'refused']],
    ['the paused server alone', ['paused']],
  ] as const)(
    'a { client } Cluster whose startup nodes are %s',
    async (_, order) => {
      redis.server.pause();
      const refused = await closedPort();
      const cluster = await userCluster(order.map((n) => (n === 'paused' ? redis.server.port : refused)));
      const { err, ms } = await failedStart(cluster);
      expect(err).toBeInstanceOf(RedisUnavailableError);
      expect(String(err)).toMatch(/Cannot connect to Redis at .*: no answer within 1500 ms/);
      expect(ms).toBeLessThan(FAR_BELOW_USERS);
      expect(cluster.status).toBe('connecting'); // the user's: still waiting for the paused node's CLUSTER SLOTS
      redis.server.resume();
      expect(await waitFor(() => cluster.status === 'end', 5_000)).toBe(true); // no cluster mode, no retry
    },
    60_000,
  );

  it('a { client } Redis connecting to the paused server', async () => {
    redis.server.pause();
    const main = trackForCleanup(new Redis(redis.server.port, '127.0.0.1', { commandTimeout: USERS_TIMEOUT }));
    main.on('error', () => undefined); // the user's own
    expect(await waitFor(() => main.status === 'connect', 5_000)).toBe(true);
    const { err, ms } = await failedStart(main);
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect(String(err)).toMatch(/Cannot connect to Redis at .*: no answer within 1500 ms/);
    expect(ms).toBeLessThan(FAR_BELOW_USERS);
    redis.server.resume();
    expect(await main.ping()).toBe('PONG');
  }, 60_000);

  it('a { client } Redis already connected, its server paused before the start', async () => {
    const main = trackForCleanup(new Redis(redis.server.port, '127.0.0.1', { commandTimeout: USERS_TIMEOUT }));
    await main.ping();
    redis.server.pause();
    const { err, ms } = await failedStart(main);
    expect(err).toBeInstanceOf(RedisUnavailableError);
    // the server check (INFO), bounded by the toolkit's commandTimeout
    expect(String(err)).toMatch(/Checking the Redis server at .*127\.0\.0\.1:\d+\) failed: no answer within 500 ms/);
    expect(ms).toBeLessThan(FAR_BELOW_USERS);
    redis.server.resume();
    expect(await main.ping()).toBe('PONG');
  }, 60_000);
});

describe('a { client } Cluster with a paused master (a private cluster)', () => {
  const cluster = useDisposableCluster();
  const PASSWORD = `start-${Math.random().toString(36).slice(2)}`;

  /** The documented `ACL SETUSER app ...` rules (docs/security.md), with our password. */
  function documentedRules(): string[] {
    const doc = readFileSync(new URL('../../docs/security.md', import.meta.url), 'utf8');
    const line = doc.split('\n').find((l) => l.startsWith('ACL SETUSER app '));
    const words = (line ?? '').trim().split(/\s+/).slice(3);
    expect(words).toContain('>long-random-password');
    return words.map((w) => (w === '>long-random-password' ? `>${PASSWORD}` : w));
  }

  afterEach(() => {
    for (const node of cluster().nodes) node.resume();
  });

  // The user may not run CLUSTER INFO (ioredis's ready check) and the first startup node, a master, answers nothing.
  // The cluster gets its slot table from another node (slotsRefreshTimeout 300 ms), its ready check is refused, and
  // it ends (no retry). The start asks why: before, on the first startup node alone, the paused one, where CLUSTER
  // INFO waited the user's 20 s and found nothing (a RedisUnavailableError after ~21.5 s); now every master of the
  // slot table at once, and the first that answers names the denial.
  it('a paused master first among the startup nodes: the ACL denial is named, from a master that answers', async () => {
    const handle = cluster();
    const rules = documentedRules().filter((w) => w !== '+cluster|info');
    for (const node of handle.nodes) {
      const admin = trackForCleanup(new Redis(node.port, '127.0.0.1', { lazyConnect: true }));
      await admin.call('acl', 'setuser', 'app', 'reset', ...rules);
    }
    const paused = handle.masters[0];
    const others = handle.startupNodes.filter((n) => n.port !== paused.port);
    paused.pause();
    const user = trackForCleanup(
      new Cluster([{ host: '127.0.0.1', port: paused.port }, ...others], {
        redisOptions: { username: 'app', password: PASSWORD, commandTimeout: USERS_TIMEOUT },
        slotsRefreshTimeout: 300,
        clusterRetryStrategy: () => null,
      }),
    );
    user.on('error', () => undefined); // the user's own
    const { err, ms } = await failedStart(user);
    expect(err).toBeInstanceOf(RedisPermissionError);
    expect(String(err)).toMatch(/may not run CLUSTER INFO, which ioredis needs.*\+cluster\|info/);
    expect(ms).toBeLessThan(FAR_BELOW_USERS);
  }, 60_000);

  // Fixed in 9d9c542; before it: ~30 s. The cluster is ready, so the start goes on to the ACL check, which asks each
  // master of the slot table on a connection of its own (onNodeConnection). That connection had the cluster's
  // redisOptions: the paused master's ready check waited the user's commandTimeout, and the check was asked
  // CHECK_ATTEMPTS (3) times: RedisUnavailableError "Redis ACL permission check failed: node 127.0.0.1:<port>: Command
  // timed out" after ~30 s with the user's 8 s (66 s with 20 s). Now each command to a master waits at most the
  // toolkit's commandTimeout (0.5 s) and the check as a whole what is left of its connectTimeout + commandTimeout.
  it("a ready { client } Cluster, one master paused before the start: the ACL check keeps to the toolkit's budget", async () => {
    const handle = cluster();
    const usersTimeout = 8_000;
    const user = trackForCleanup(
      new Cluster(handle.startupNodes, {
        redisOptions: { commandTimeout: usersTimeout },
        clusterRetryStrategy: () => null,
      }),
    );
    user.on('error', () => undefined); // the user's own
    await user.ping();
    const paused = handle.masters[1];
    paused.pause();
    const { err, ms } = await failedStart(user);
    expect(err).toBeInstanceOf(RedisUnavailableError);
    // the master that gave no answer, and that it gave none (its command timed out, or the check's time was up)
    const failed = `Redis ACL permission check failed: node 127\\.0\\.0\\.1:${paused.port}`;
    expect(String(err)).toMatch(new RegExp(`${failed}: (Command timed out|no answer within \\d+ ms)$`));
    for (const m of handle.masters) if (m !== paused) expect(String(err)).not.toContain(String(m.port));
    expect(ms).toBeLessThan(usersTimeout); // before: ~30 s
    paused.resume();
    expect(user.status).toBe('ready'); // the user's cluster, left as it was
    expect(await user.ping()).toBe('PONG');
  }, 60_000);

  it('a ready { client } Cluster with long timeouts of its own, every master answering: the start passes', async () => {
    const handle = cluster();
    const user = trackForCleanup(
      new Cluster(handle.startupNodes, {
        redisOptions: { commandTimeout: USERS_TIMEOUT },
        clusterRetryStrategy: () => null,
      }),
    );
    user.on('error', () => undefined); // the user's own
    await user.ping();
    const { err } = await failedStart(user);
    expect(err).toBeUndefined();
  }, 60_000);
});
