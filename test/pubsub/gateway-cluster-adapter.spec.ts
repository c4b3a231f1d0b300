/**
 * The gateway in a Node cluster with the real @socket.io/cluster-adapter: a primary running the adapter's
 * setupPrimary() and two worker processes, each a Nest app with the notifications gateway whose Socket.IO server uses
 * the adapter's createAdapter() (Nest's IoAdapter recipe), on one private Redis (fixtures/cluster-primary.ts and
 * cluster-worker.ts, loaded from their TypeScript sources through test/support/ts-hooks.mjs). No @socket.io/sticky: the
 * servers and the clients use the websocket transport only, so each connection stays on the worker that accepted it
 * and each client connects to the port of the worker it means. The notifications are published by a third toolkit
 * app in this process, on the same key prefix, as any instance of the app would.
 *
 * gateway-io-adapter.spec.ts covers the adapter's base class in one process; here the adapter's own IPC through the
 * primary carries whatever the gateway or the app emits, and a worker can die.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { PubSubService } from '../../lib/index.js';
import type { NotificationsGatewayStats } from '../../lib/notifications/index.js';
import { type ClusterRun, startClusterRun } from '../support/cluster-run.js';
import { usePrivateRedis } from '../support/private-servers.js';
import { closeClients, connectClient, connectStalledClient, type TestClient } from '../support/pubsub-gateway.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, type ToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';
import { commandCalls, resetCommandCalls } from '../support/commandstats.js';

// Its own server: INFO commandstats counts only this file's commands.
const redis = usePrivateRedis();

const PRIMARY = fileURLToPath(new URL('./fixtures/cluster-primary.ts', import.meta.url));
/** Every worker's slowClient.maxBufferedBytes (policy `drop`). */
const CAP = 1024 * 1024;

interface WorkerInfo {
  index: number;
  pid: number;
  port: number;
  url: string;
}

interface WorkerState {
  index: number;
  pid: number;
  stats: NotificationsGatewayStats;
  sockets: { id: string; rooms: string[] }[];
  /** The adapter's count of servers: this one and those it heard a heartbeat from. */
  serverCount: number;
  unhandled: string[];
}

type Run = ClusterRun<{ index: number; pid: number; port: number }[], WorkerInfo>;

async function startCluster(platform: string, keyPrefix: string): Promise<Run> {
  const { run, ready } = await startClusterRun<{ index: number; pid: number; port: number }[], WorkerInfo>(PRIMARY, {
    RTK_REDIS_URL: redis.server.url,
    RTK_KEY_PREFIX: keyPrefix,
    RTK_PLATFORM: platform,
    RTK_MAX_BUFFERED_BYTES: String(CAP),
  });
  run.workers = ready.map((w) => ({ ...w, url: `http://127.0.0.1:${w.port}` }));
  return run;
}

/** GET `/ctl/<path>` on a worker (no keep-alive: the worker may be killed), its JSON body. */
function ctl<T = unknown>(worker: WorkerInfo, path: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request(`${worker.url}/ctl/${path}`, { agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        if (res.statusCode !== 200)
          reject(new Error(`GET /ctl/${path} on worker ${worker.index}: ${res.statusCode} ${body}`));
        else resolve(JSON.parse(body) as T);
      });
    });
    req.on('error', reject);
    req.end();
  });
}

const state = (worker: WorkerInfo) => ctl<WorkerState>(worker, 'stats');

const commandStats = () => commandCalls(redis.server.url);
const resetStats = () => resetCommandCalls(redis.server.url);

const range = (n: number, from = 0): number[] => Array.from({ length: n }, (_, i) => from + i);

/** Each client's notifications, by channel, as their `data`. */
const byChannel = (client: TestClient): Record<string, unknown[]> => {
  const out: Record<string, unknown[]> = {};
  for (const m of client.got) (out[m.channel] ??= []).push(m.data);
  return out;
};

/** What a client got of the app's own emits of `event`: `{ from, i }` by the worker they came from. */
function recordEvents(client: TestClient, event: string): Record<number, number[]> {
  const got: Record<number, number[]> = {};
  client.socket.on(event, ({ from, i }: { from: number; i: number }) => {
    (got[from] ??= []).push(i);
  });
  return got;
}

/**
 * Each worker emits `fence` to the whole namespace (an app's own `server.emit`, through the adapter). The adapter
 * carries a worker's emits to the other in order over the primary, so once every client has every worker's fence,
 * any copy a worker sent through the adapter before has arrived too. Each client gets each fence once.
 */
async function fence(workers: WorkerInfo[], clients: TestClient[]): Promise<void> {
  const fences = clients.map((c) => recordEvents(c, 'fence'));
  for (const worker of workers) await ctl(worker, 'emit?event=fence&n=1');
  const complete = () => fences.every((f) => workers.every((w) => (f[w.index]?.length ?? 0) >= 1));
  expect(await waitFor(complete, 15_000)).toBe(true);
  for (const c of clients) c.socket.off('fence');
  expect(fences).toEqual(clients.map(() => Object.fromEntries(workers.map((w) => [w.index, [0]]))));
}

describe.each(PLATFORMS)('the gateway in a Node cluster with @socket.io/cluster-adapter (%s)', (platform) => {
  let run: Run | undefined;
  let publisher: ToolkitApp;
  let w0: WorkerInfo;
  let w1: WorkerInfo;

  beforeAll(async () => {
    const keyPrefix = `gca${randomBytes(4).toString('hex')}:`;
    run = await startCluster(platform, keyPrefix);
    [w0, w1] = run.workers;
    publisher = await createToolkitApp({ target: { url: redis.server.url }, keyPrefix, commandTimeout: 10_000 });
    // Each worker's adapter has heard the other (its first heartbeat), so the cluster is whole before any case.
    const whole = async () => (await Promise.all([state(w0), state(w1)])).every((s) => s.serverCount === 2);
    expect(await waitFor(whole, 15_000)).toBe(true);
  }, 90_000);

  afterEach(() => closeClients());

  afterAll(async () => {
    closeClients();
    await run?.stop();
    await closeToolkitApps();
  });

  it('each client gets each notification once, in order (a user on both workers: once per socket); one PUBLISH each', async () => {
    const before = await Promise.all([state(w0), state(w1)]);
    // alice on both workers, bob on the first, carol on the second; each in their user room, a public room, a pattern.
    const clients = [
      await connectClient(w0.url, { token: 'u:alice' }),
      await connectClient(w1.url, { token: 'u:alice' }),
      await connectClient(w0.url, { token: 'u:bob' }),
      await connectClient(w1.url, { token: 'u:carol' }),
    ];
    const users = ['alice', 'alice', 'bob', 'carol'];
    for (const [i, client] of clients.entries()) {
      for (const channel of [`user:${users[i]}`, 'news', 'feed:*'])
        expect(await client.subscribe(channel)).toEqual({ ok: true });
    }
    const n = 20;
    const pubsub = publisher.get(PubSubService);
    await resetStats();
    for (let i = 0; i < n; i++) {
      for (const user of ['alice', 'bob', 'carol']) await pubsub.notifyUser(user, i);
      await pubsub.publish('news', i);
      await pubsub.publish('feed:x', i);
    }
    expect(await waitFor(() => clients.every((c) => c.got.length >= 3 * n), 15_000)).toBe(true);
    await fence([w0, w1], clients);
    const after = await Promise.all([state(w0), state(w1)]);
    expect({
      got: clients.map(byChannel),
      // Ours only: the fences went over the primary, and the adapter carried no notification.
      publishes: (await commandStats()).publish,
      delivered: after.map((s, i) => s.stats.delivered - before[i].stats.delivered),
    }).toEqual({
      got: users.map((user) => ({ [`user:${user}`]: range(n), news: range(n), 'feed:x': range(n) })),
      publishes: 5 * n,
      delivered: [2 * 3 * n, 2 * 3 * n],
    });
  }, 30_000);

  it("the app's own server.emit and server.to(room).emit still cross the workers through the adapter", async () => {
    const [a0, b0] = [await connectClient(w0.url, { token: 'u:a0' }), await connectClient(w0.url, { token: 'u:b0' })];
    const [a1, b1] = [await connectClient(w1.url, { token: 'u:a1' }), await connectClient(w1.url, { token: 'u:b1' })];
    const clients = [a0, b0, a1, b1];
    // The first worker puts a0 and a1 in the app's room `team`: a1 through the adapter (a socket of the other worker).
    await ctl(w0, `join?room=team&ids=${a0.socket.id},${a1.socket.id}`);
    const inTeam = async () => (await state(w1)).sockets.some((s) => s.id === a1.socket.id && s.rooms.includes('team'));
    expect(await waitFor(inTeam, 10_000)).toBe(true);
    const toTeam = clients.map((c) => recordEvents(c, 'team-event'));
    const toAll = clients.map((c) => recordEvents(c, 'all-event'));
    for (const worker of [w0, w1]) {
      await ctl(worker, 'emit?event=team-event&n=10&room=team');
      await ctl(worker, 'emit?event=all-event&n=5');
    }
    await fence([w0, w1], clients);
    const fromBoth = (n: number) => ({ 0: range(n), 1: range(n) });
    expect({ toTeam, toAll }).toEqual({
      toTeam: [fromBoth(10), {}, fromBoth(10), {}],
      toAll: clients.map(() => fromBoth(5)),
    });
  }, 30_000);

  it('the slow-client byte cap holds on each worker, for what that worker relays', async () => {
    const before = await Promise.all([state(w0), state(w1)]);
    const fast = [await connectClient(w0.url, { token: 'u:f0' }), await connectClient(w1.url, { token: 'u:f1' })];
    for (const client of fast) expect(await client.subscribe('big')).toEqual({ ok: true });
    // A client on each worker that subscribes and then reads nothing.
    const stalled = [
      await connectStalledClient(w0.url, 'u:s0', 'big'),
      await connectStalledClient(w1.url, 'u:s1', 'big'),
    ];
    try {
      const pubsub = publisher.get(PubSubService);
      const blob = 'x'.repeat(64 * 1024);
      const n = 200; // 200 x 64 KB = 12.5 MB: more than the loopback socket buffers hold
      const maxHeld = [0, 0];
      const sample = async () => {
        const held = await Promise.all([w0, w1].map((w) => ctl<{ bytes: number }>(w, 'held')));
        for (const [i, { bytes }] of held.entries()) maxHeld[i] = Math.max(maxHeld[i], bytes);
      };
      for (let i = 0; i < n; i++) {
        await pubsub.publish('big', { i, blob });
        await sample();
      }
      expect(await waitFor(() => fast.every((c) => c.got.length >= n), 20_000)).toBe(true);
      // Each worker has relayed all n to its two sockets (delivered, or skipped by its policy).
      const relayed = async () =>
        (await Promise.all([state(w0), state(w1)])).map(
          (s, i) => s.stats.delivered + s.stats.droppedSlow - before[i].stats.delivered - before[i].stats.droppedSlow,
        );
      expect(await waitFor(async () => (await relayed()).every((r) => r >= 2 * n), 20_000)).toBe(true);
      await fence([w0, w1], fast);
      await sample();
      const after = await Promise.all([state(w0), state(w1)]);
      expect({
        fast: fast.map((c) => c.got.map((m) => (m.data as { i: number }).i)),
        relayed: await relayed(),
        dropped: after.map((s, i) => s.stats.droppedSlow - before[i].stats.droppedSlow > 0),
        // At most the cap plus the one message that crossed it (about 64 KB with its envelope), on each worker.
        heldWithinCap: maxHeld.map((held) => (held <= CAP + 70 * 1024 ? true : held)),
      }).toEqual({
        fast: [range(n), range(n)],
        relayed: [2 * n, 2 * n],
        dropped: [true, true],
        heldWithinCap: [true, true],
      });
    } finally {
      for (const client of stalled) client.close();
    }
  }, 60_000);

  // Last: it kills the second worker.
  it("a worker dies: the other's clients get every notification once; no unhandled rejection anywhere left", async () => {
    if (!run) throw new Error('no cluster');
    const alice0 = await connectClient(w0.url, { token: 'u:alice' });
    const alice1 = await connectClient(w1.url, { token: 'u:alice' });
    const bob0 = await connectClient(w0.url, { token: 'u:bob' });
    for (const [client, user] of [
      [alice0, 'alice'],
      [alice1, 'alice'],
      [bob0, 'bob'],
    ] as const) {
      for (const channel of [`user:${user}`, 'news']) expect(await client.subscribe(channel)).toEqual({ ok: true });
    }
    const pubsub = publisher.get(PubSubService);
    const publishRound = async (from: number, count: number) => {
      for (let i = from; i < from + count; i++) {
        await pubsub.notifyUser('alice', i);
        await pubsub.notifyUser('bob', i);
        await pubsub.publish('news', i);
      }
    };
    await publishRound(0, 5);
    expect(await waitFor(() => [alice0, alice1, bob0].every((c) => c.got.length >= 10), 15_000)).toBe(true);

    process.kill(w1.pid, 'SIGKILL');
    expect(
      await waitFor(() => run?.exits().some((e) => e.index === 1) === true && alice1.socket.disconnected, 15_000),
    ).toBe(true);
    // The survivor's adapter drops the dead worker once its heartbeats stop (the fixture's timeout: 1 s).
    expect(await waitFor(async () => (await state(w0)).serverCount === 1, 15_000)).toBe(true);

    await resetStats();
    await publishRound(5, 10);
    expect(await waitFor(() => [alice0, bob0].every((c) => c.got.length >= 30), 15_000)).toBe(true);
    // The survivor's own emits still reach its clients (the adapter has no one left to send them to).
    await fence([w0], [alice0, bob0]);
    const survivor = await state(w0);
    expect({
      alice0: byChannel(alice0),
      bob0: byChannel(bob0),
      alice1: byChannel(alice1),
      publishes: (await commandStats()).publish,
      exits: run.exits().map(({ index, signal }) => ({ index, signal })),
      primaryRunning: run.running,
      unhandled: [...run.unhandled(), ...survivor.unhandled],
    }).toEqual({
      alice0: { 'user:alice': range(15), news: range(15) },
      bob0: { 'user:bob': range(15), news: range(15) },
      alice1: { 'user:alice': range(5), news: range(5) },
      publishes: 30,
      exits: [{ index: 1, signal: 'SIGKILL' }],
      primaryRunning: true,
      unhandled: [],
    });
  }, 60_000);
});
