/**
 * Tests of the real-Redis test harness itself (test/support). Every test owns and disposes of its servers and
 * clients; the servers that get killed/paused/restarted here are private ones, never the shared ones.
 */
import { Cluster, Redis } from 'ioredis';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { trackForCleanup, usePrivateRedis } from './support/private-servers.js';
import { startQuorumServers } from './support/quorum.js';
import { startRedisCluster, type RedisClusterHandle } from './support/redis-cluster.js';
import {
  getFreePort,
  STATE_DIR,
  startRedisServer,
  sweepStaleServers,
  type RedisServerHandle,
} from './support/redis-server.js';
import { isLiveRedisServer } from './support/redis-processes.js';
import { probePing, rawCommand } from './support/resp.js';
import { flushShared, SHARED_SERVERS_ENV, sharedServers } from './support/shared-servers.js';
import { spawnTestingChild, TESTING_CHILD_PRELUDE } from './support/testing-child.js';

/** Outcome of a bare TCP connect: 'connected' or the error code (e.g. 'ECONNREFUSED'). */
function tcpConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

function pidFileOf(pid: number): string {
  return join(STATE_DIR, `${pid}.pid`);
}

function requirePid(server: RedisServerHandle): number {
  const { pid } = server;
  if (pid === undefined) throw new Error(`server on port ${server.port} has no pid`);
  return pid;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('startRedisServer', () => {
  test('starts on a free loopback port, answers PING through ioredis, and stop() leaves nothing behind', async () => {
    const server = trackForCleanup(await startRedisServer());
    expect(server.host).toBe('127.0.0.1');
    expect(server.port).not.toBe(6379);
    expect(server.url).toBe(`redis://127.0.0.1:${server.port}`);
    expect(server.isRunning()).toBe(true);
    const pid = requirePid(server);
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain(`redis-server 127.0.0.1:${server.port}`);
    expect(existsSync(pidFileOf(pid))).toBe(true);
    expect(existsSync(server.dir)).toBe(true);

    const client = trackForCleanup(new Redis(server.url));
    expect(await client.ping()).toBe('PONG');
    expect(await client.config('GET', 'save')).toEqual(['save', '']);
    await client.quit();

    await server.stop();
    expect(server.isRunning()).toBe(false);
    expect(server.pid).toBeUndefined();
    expect(existsSync(pidFileOf(pid))).toBe(false);
    expect(isLiveRedisServer(pid)).toBe(false);
    await server.stop(); // idempotent
  });

  test('kill() makes the port refuse connections; restart() comes back on the same port with no data', async () => {
    const server = trackForCleanup(await startRedisServer());
    const { port } = server;
    expect(await rawCommand(port, ['SET', 'survives', 'no'])).toBe('OK');

    await server.kill();
    expect(server.isRunning()).toBe(false);
    expect(await tcpConnect(port)).toBe('ECONNREFUSED');
    expect(await probePing(port)).toBe('refused');

    await server.restart();
    expect(server.port).toBe(port);
    expect(server.isRunning()).toBe(true);
    const client = trackForCleanup(new Redis(server.url));
    expect(await client.ping()).toBe('PONG');
    expect(await client.get('survives')).toBeNull();
    expect(await client.dbsize()).toBe(0);
    await client.quit();
    await expect(server.restart()).rejects.toThrow(/already running/);
    await server.stop();
  });

  test('pause() silences the server (the TCP port still accepts), resume() brings it back', async () => {
    const server = trackForCleanup(await startRedisServer());
    const client = trackForCleanup(new Redis(server.url));
    expect(await client.ping()).toBe('PONG');

    server.pause();
    expect(await probePing(server.port, { timeoutMs: 300 })).toBe('timeout');
    expect(await tcpConnect(server.port)).toBe('connected'); // the kernel still completes handshakes
    let answered = false;
    const pending = client.ping().then((reply) => {
      answered = true;
      return reply;
    });
    await sleep(200);
    expect(answered).toBe(false);

    server.resume();
    expect(await probePing(server.port, { timeoutMs: 2000 })).toBe('pong');
    expect(await pending).toBe('PONG'); // the command queued during the pause completes
    await client.quit();

    // stop() must also work on a paused server (SIGTERM alone would stay pending forever).
    server.pause();
    await server.stop();
    expect(server.isRunning()).toBe(false);
  });

  test('password and ACL user: credentials in the url, unauthenticated access refused, flush() authenticates', async () => {
    const password = 'p@ss w/rd';
    const server = trackForCleanup(
      await startRedisServer({ password, aclUser: { name: 'tester', password: 'secret:1' } }),
    );
    expect(server.url).toBe(`redis://tester:secret%3A1@127.0.0.1:${server.port}`);
    expect(await probePing(server.port)).toBe('error'); // NOAUTH
    expect(await probePing(server.port, { auth: { password } })).toBe('pong');

    const client = trackForCleanup(new Redis(server.url));
    expect(await client.acl('WHOAMI')).toBe('tester');
    await client.set('k', 'v');
    await server.flush();
    expect(await client.dbsize()).toBe(0);
    await client.quit();
    await server.stop();
  });

  test('a failed start reports redis own error output and leaves no dir behind', async () => {
    const myDirs = (): string[] => readdirSync(STATE_DIR).filter((name) => name.startsWith(`srv-${process.pid}-`));
    const dirsBefore = myDirs();
    const failed = startRedisServer({ args: ['--maxmemory-policy', 'not-a-policy'] });
    await expect(failed).rejects.toThrow(/exited early[\s\S]*not-a-policy/);
    expect(myDirs()).toEqual(dirsBefore);

    const taken = trackForCleanup(await startRedisServer());
    await expect(startRedisServer({ port: taken.port })).rejects.toThrow(/Address already in use/);
    await taken.stop();
  });

  test('refuses port 6379 and explains how to install a missing redis-server', async () => {
    await expect(startRedisServer({ port: 6379 })).rejects.toThrow(/refusing .* 6379/);
    const savedPath = process.env.PATH;
    process.env.PATH = '/nonexistent-dir';
    try {
      await expect(startRedisServer()).rejects.toThrow('redis-server not found: apt-get install -y redis-server');
    } finally {
      process.env.PATH = savedPath;
    }
  });

  test('getFreePort() returns distinct usable loopback ports', async () => {
    const ports = await Promise.all([getFreePort(), getFreePort(), getFreePort()]);
    expect(new Set(ports).size).toBe(3);
    for (const port of ports) {
      expect(port).toBeGreaterThan(0);
      expect(port).not.toBe(6379);
    }
  });
});

describe('leak protection', () => {
  // Runs lib/testing's redis-server in a separate Node process (transpiled with @swc/core, which the jest transform uses
  // too), so the test can observe what happens when that process exits or dies.
  const CHILD_SCRIPT = `${TESTING_CHILD_PRELUDE}
    const server = await startRedisServer();
    console.log(JSON.stringify({ pid: server.pid, port: server.port, dir: server.dir }));
    if (mode === 'crash') process.kill(process.pid, 'SIGKILL');
    // mode 'exit': never stop() the server and just let the event loop run dry.
  `;

  interface ChildReport {
    pid: number;
    port: number;
    dir: string;
  }

  async function runChild(mode: 'exit' | 'crash'): Promise<{ report: ChildReport; signal: NodeJS.Signals | null }> {
    const outDir = mkdtempSync(join(STATE_DIR, 'child-build-'));
    try {
      const { child, output } = spawnTestingChild(CHILD_SCRIPT, outDir, mode);
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      const signal = await new Promise<NodeJS.Signals | null>((resolve) =>
        child.once('close', (_code, sig) => resolve(sig)),
      );
      clearTimeout(timer);
      const { stdout, stderr } = output;
      const line = stdout.trim().split('\n').pop() ?? '';
      if (!line.startsWith('{'))
        throw new Error(`child produced no report (signal ${signal}).\nstdout: ${stdout}\nstderr: ${stderr}`);
      return { report: JSON.parse(line) as ChildReport, signal };
    } finally {
      rmSync(outDir, { recursive: true, force: true });
    }
  }

  test('a process that never calls stop() still exits, and its exit hook kills the server and removes its files', async () => {
    const { report, signal } = await runChild('exit');
    expect(signal).toBeNull(); // exited by itself: the unref()ed server did not keep it alive
    expect(isLiveRedisServer(report.pid)).toBe(false);
    expect(await probePing(report.port)).toBe('refused');
    expect(existsSync(pidFileOf(report.pid))).toBe(false);
    expect(existsSync(report.dir)).toBe(false);
  });

  test('sweepStaleServers() kills servers of a crashed run and spares servers whose owner is alive', async () => {
    const { report, signal } = await runChild('crash');
    expect(signal).toBe('SIGKILL');
    try {
      // No exit hook ran: the server is orphaned, and its pid file points at a dead owner.
      expect(isLiveRedisServer(report.pid)).toBe(true);
      expect(existsSync(pidFileOf(report.pid))).toBe(true);

      const mine = trackForCleanup(await startRedisServer());
      expect(sweepStaleServers()).toBeGreaterThanOrEqual(1);
      for (let i = 0; i < 50 && isLiveRedisServer(report.pid); i++) await sleep(20);
      expect(isLiveRedisServer(report.pid)).toBe(false);
      expect(existsSync(pidFileOf(report.pid))).toBe(false);
      expect(existsSync(report.dir)).toBe(false);
      expect(await probePing(mine.port)).toBe('pong');
      await mine.stop();
    } finally {
      if (isLiveRedisServer(report.pid)) process.kill(report.pid, 'SIGKILL');
    }
  });

  test('sweepStaleServers() ignores pid files whose process is not a redis-server', () => {
    // A dead owner and a pid (our own) that is not redis: the file goes, nothing is signalled.
    const file = pidFileOf(process.pid);
    writeFileSync(file, JSON.stringify({ pid: process.pid, owner: 2 ** 22 + 1, port: 1, dir: '/nonexistent' }));
    try {
      expect(sweepStaleServers()).toBe(0);
      expect(existsSync(file)).toBe(false);
    } finally {
      rmSync(file, { force: true });
    }
  });
});

describe('trackForCleanup', () => {
  let tracked: RedisServerHandle | undefined;

  test('tracks a server started inside a test', async () => {
    tracked = trackForCleanup(await startRedisServer());
    expect(tracked.isRunning()).toBe(true);
  });

  test('...which was stopped after that test', () => {
    expect(tracked?.isRunning()).toBe(false);
  });
});

describe('usePrivateRedis', () => {
  const redis = usePrivateRedis({ password: 'hunter2' });

  test('provides a running private server for the block', async () => {
    expect(redis.server.isRunning()).toBe(true);
    expect(redis.server.url).toBe(`redis://:hunter2@127.0.0.1:${redis.server.port}`);
    const client = trackForCleanup(new Redis(redis.server.url));
    expect(await client.ping()).toBe('PONG');
    await client.quit();
  });
});

describe('startRedisCluster', () => {
  let cluster: RedisClusterHandle | undefined;
  const handle = (): RedisClusterHandle => {
    if (!cluster) throw new Error('cluster not started');
    return cluster;
  };

  beforeAll(async () => {
    cluster = trackForCleanup(await startRedisCluster());
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  test('forms a 3-master cluster and spreads 100 keys over more than one master', async () => {
    const { nodes, masters, startupNodes } = handle();
    expect(nodes).toHaveLength(3);
    expect(masters).toHaveLength(3);
    expect(new Set(startupNodes.map((n) => n.port)).size).toBe(3);

    const client = trackForCleanup(new Cluster(startupNodes));
    await Promise.all(Array.from({ length: 100 }, (_, i) => client.set(`key:${i}`, String(i))));
    expect(await client.get('key:42')).toBe('42');
    await client.quit();

    const info = String(await rawCommand(masters[0]?.port ?? 0, ['CLUSTER', 'INFO']));
    expect(info).toMatch(/^cluster_state:ok\r?$/m);
    expect(info).toMatch(/^cluster_known_nodes:3\r?$/m);

    const sizes = (await Promise.all(masters.map((m) => rawCommand(m.port, ['DBSIZE'])))).map(Number);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(100);
    expect(sizes.filter((n) => n > 0).length).toBeGreaterThan(1);
  });

  test('flush() empties every master', async () => {
    const { masters } = handle();
    await handle().flush();
    const sizes = (await Promise.all(masters.map((m) => rawCommand(m.port, ['DBSIZE'])))).map(Number);
    expect(sizes).toEqual([0, 0, 0]);
  });
});

describe('startQuorumServers', () => {
  test('starts n independent servers', async () => {
    const servers = await startQuorumServers(3);
    for (const s of servers) trackForCleanup(s);
    expect(new Set(servers.map((s) => s.port)).size).toBe(3);
    await rawCommand(servers[0]?.port ?? 0, ['SET', 'only-here', '1']);
    expect(await Promise.all(servers.map((s) => rawCommand(s.port, ['EXISTS', 'only-here'])))).toEqual([1, 0, 0]);
    await Promise.all(servers.map((s) => s.stop()));
  });
});

describe('shared servers (started by globalSetup)', () => {
  test('every shared server answers PING', async () => {
    const { single, cluster, quorum } = sharedServers();
    const client = trackForCleanup(new Redis(single.url));
    expect(await client.ping()).toBe('PONG');
    await client.quit();

    expect(cluster).toHaveLength(3);
    for (const node of [...cluster, ...quorum]) expect(await probePing(node.port, { host: node.host })).toBe('pong');
    const info = String(await rawCommand(cluster[0]?.port ?? 0, ['CLUSTER', 'INFO']));
    expect(info).toMatch(/^cluster_state:ok\r?$/m);
  });

  test('the quorum servers are 3 distinct servers, separate from the others', () => {
    const { single, cluster, quorum } = sharedServers();
    const quorumPorts = new Set(quorum.map((q) => q.port));
    expect(quorumPorts.size).toBe(3);
    for (const other of [single, ...cluster]) expect(quorumPorts.has(other.port)).toBe(false);
  });

  test('flushShared() empties the single server, the cluster and the quorum servers', async () => {
    const { single, cluster, quorum } = sharedServers();
    const client = trackForCleanup(new Cluster(cluster));
    await Promise.all(Array.from({ length: 20 }, (_, i) => client.set(`harness:${i}`, '1')));
    await rawCommand(single.port, ['SET', 'harness', '1']);
    await Promise.all(quorum.map((q) => rawCommand(q.port, ['SET', 'harness', '1'])));

    await flushShared();
    const sizes = await Promise.all(
      [single, ...cluster, ...quorum].map((s) => rawCommand(s.port, ['DBSIZE'], { host: s.host })),
    );
    expect(sizes.every((n) => n === 0)).toBe(true);
    await client.quit();
  });

  test('sharedServers() explains what is missing when globalSetup did not run', () => {
    const saved = process.env[SHARED_SERVERS_ENV];
    delete process.env[SHARED_SERVERS_ENV];
    try {
      expect(() => sharedServers()).toThrow(/RTK_TEST_SERVERS is not set.*global-setup/);
    } finally {
      process.env[SHARED_SERVERS_ENV] = saved;
    }
  });
});
