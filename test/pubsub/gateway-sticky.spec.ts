/**
 * The gateway on Socket.IO's documented cluster recipe: a primary owning the HTTP port with @socket.io/sticky's
 * setupMaster (least-connection) and @socket.io/cluster-adapter's setupPrimary(), and two worker processes, each a
 * Nest app (Express or Fastify) with the notifications gateway and its default session `authenticate`, whose Socket.IO
 * server runs the cluster adapter and sticky's setupWorker and takes the default transports
 * (fixtures/sticky-{primary,worker}.ts, loaded from their TypeScript sources through test/support/ts-hooks.mjs).
 * Clients connect to the primary's one port, on HTTP long-polling only or on the default (polling, then an upgrade to
 * WebSocket): every request of an engine.io session must reach the worker that holds it, which only sticky gives.
 * The notifications are published by a third toolkit app in this process, on the same key prefix, which also creates
 * the sessions.
 *
 * gateway-cluster-adapter.spec.ts runs the same adapter without sticky (websocket only, a port per worker).
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { io, type Socket } from 'socket.io-client';
import { PubSubService, SessionService } from '../../lib/index.js';
import { REDIS_TOOLKIT_OPTIONS, type ResolvedRedisToolkitOptions } from '../../lib/advanced.js';
import type { NotificationAck, NotificationMessage, NotificationsGatewayStats } from '../../lib/notifications/index.js';
import { type ClusterRun, startClusterRun } from '../support/cluster-run.js';
import { commandCalls, resetCommandCalls } from '../support/commandstats.js';
import { usePrivateRedis } from '../support/private-servers.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, type ToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

// Its own server: INFO commandstats counts only this file's commands.
const redis = usePrivateRedis();

const PRIMARY = fileURLToPath(new URL('./fixtures/sticky-primary.ts', import.meta.url));
const SECRET = randomBytes(32).toString('base64');

interface WorkerInfo {
  index: number;
  pid: number;
  ctlPort: number;
}

interface WorkerState {
  index: number;
  pid: number;
  stickyOnAppServer: boolean;
  appListening: boolean;
  stats: NotificationsGatewayStats;
  sockets: { id: string; rooms: string[]; transport: string }[];
  /** The adapter's count of servers: this one and those it heard a heartbeat from. */
  serverCount: number;
  unhandled: string[];
}

type Run = ClusterRun<{ port: number; workers: WorkerInfo[] }, WorkerInfo>;

/** The cluster, and the URL of the primary's one port (sticky's). */
async function startCluster(platform: string, keyPrefix: string): Promise<{ run: Run; url: string }> {
  const { run, ready } = await startClusterRun<{ port: number; workers: WorkerInfo[] }, WorkerInfo>(PRIMARY, {
    RTK_REDIS_URL: redis.server.url,
    RTK_KEY_PREFIX: keyPrefix,
    RTK_PLATFORM: platform,
    RTK_SESSION_SECRET: SECRET,
  });
  run.workers = ready.workers;
  return { run, url: `http://127.0.0.1:${ready.port}` };
}

/** GET `/<path>` on a worker's own control port (no keep-alive: the worker may be killed), its JSON body. */
function ctl<T>(worker: WorkerInfo, path: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request(`http://127.0.0.1:${worker.ctlPort}/${path}`, { agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        if (res.statusCode !== 200)
          reject(new Error(`GET /${path} on worker ${worker.index}: ${res.statusCode} ${body}`));
        else resolve(JSON.parse(body) as T);
      });
    });
    req.on('error', reject);
    req.end();
  });
}

const state = (worker: WorkerInfo) => ctl<WorkerState>(worker, 'stats');

const range = (n: number, from = 0): number[] => Array.from({ length: n }, (_, i) => from + i);

type Transports = 'polling' | 'default';

interface Client {
  socket: Socket;
  got: NotificationMessage[];
  /**
   * engine.io's probe of the WebSocket upgrade failed (`upgradeError`): the client stays on polling, as engine.io
   * does not try again. Sticky's race (`retried`) does it to an upgrade too: the probe reaches the primary before the
   * worker's IPC message has bound the session, and goes to the other worker.
   */
  upgradeFailed: boolean;
  subscribe(channel: string, lastId?: string): Promise<NotificationAck>;
  /** Each channel's notifications, as their `data`. */
  byChannel(): Record<string, unknown[]>;
}

const sockets = new Set<Socket>();

function closeClients(): void {
  for (const socket of sockets) socket.close();
  sockets.clear();
}

/**
 * Connections that failed below Socket.IO before they were accepted or refused, and that the client retried: sticky
 * binds an engine.io session to its worker when the worker's IPC message reaches the primary, which can come after
 * the client's next request (that request gets 400 "Session ID unknown"; socketio/socket.io-sticky#2): 7 of 900
 * polling handshakes in a loop here. The client's reconnection, on by default, makes a new handshake.
 */
const retried: string[] = [];
/** A retried failure that is sticky's race: the 400 "Session ID unknown" of a polling request. */
const stickyRace = (failure: string) => failure.endsWith(' 400 {"code":1,"message":"Session ID unknown"}');

/**
 * A client of the gateway through the primary's port: HTTP long-polling only, or the default transports (polling,
 * then the upgrade), reconnecting as a client does by default (quickly here). Resolves once connected; rejects with
 * the server's refusal (connect_error with `data`, after which a client does not reconnect).
 */
function connect(
  url: string,
  transports: Transports,
  options: { token?: string; cookie?: string } = {},
): Promise<Client> {
  const socket = io(`${url}/notifications`, {
    ...(transports === 'polling' && { transports: ['polling'] }),
    auth: options.token === undefined ? {} : { token: options.token },
    ...(options.cookie !== undefined && { extraHeaders: { cookie: options.cookie } }),
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    // Generous on a busy 2-core machine (a bound, not a check).
    timeout: 30_000,
  });
  sockets.add(socket);
  const got: NotificationMessage[] = [];
  socket.on('notification', (m: NotificationMessage) => got.push(m));
  socket.io.on('open', () => socket.io.engine.on('upgradeError', () => (client.upgradeFailed = true)));
  const client: Client = {
    socket,
    got,
    upgradeFailed: false,
    subscribe: (channel, lastId) =>
      new Promise<NotificationAck>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ack for subscribe ${channel} within 30 s`)), 30_000);
        socket.emit('subscribe', lastId === undefined ? { channel } : { channel, lastId }, (ack: NotificationAck) => {
          clearTimeout(timer);
          resolve(ack);
        });
      }),
    byChannel: () => {
      const out: Record<string, unknown[]> = {};
      for (const m of got) (out[m.channel] ??= []).push(m.data);
      return out;
    },
  };
  return new Promise((resolve, reject) => {
    const onError = (err: Error & { data?: unknown }) => {
      if (socket.active) {
        const { context } = err as { context?: { status?: number; responseText?: string } };
        retried.push(`${err.message} ${context?.status} ${context?.responseText}`);
        return;
      }
      socket.off('connect_error', onError);
      socket.close();
      reject(err);
    };
    socket.on('connect_error', onError);
    socket.once('connect', () => {
      socket.off('connect_error', onError);
      resolve(client);
    });
  });
}

/**
 * Each worker emits `fence` to the whole namespace (an app's own `server.emit`, through the adapter). The adapter
 * carries a worker's emits to the other in order over the primary, so once every client has every worker's fence,
 * any copy a worker sent through the adapter before has arrived too. Each client gets each fence once.
 */
async function fence(workers: WorkerInfo[], clients: Client[]): Promise<void> {
  const fences = clients.map(() => [] as number[]);
  for (const [i, c] of clients.entries()) c.socket.on('fence', ({ from }: { from: number }) => fences[i].push(from));
  for (const worker of workers) await ctl(worker, 'fence');
  expect(await waitFor(() => fences.every((f) => f.length >= workers.length), 15_000)).toBe(true);
  for (const c of clients) c.socket.off('fence');
  expect(fences.map((f) => [...f].sort())).toEqual(clients.map(() => workers.map((w) => w.index)));
}

describe.each(PLATFORMS)('the gateway behind @socket.io/sticky with the cluster adapter (%s)', (platform) => {
  let run: Run | undefined;
  let publisher: ToolkitApp;
  let sessions: SessionService;
  let w0: WorkerInfo;
  let w1: WorkerInfo;
  let url: string;

  const states = () => Promise.all([state(w0), state(w1)]);
  /** The index of the worker holding each client's socket (-1: none). */
  const placement = async (clients: Client[]): Promise<number[]> => {
    const all = await states();
    return clients.map((c) => all.findIndex((s) => s.sockets.some((x) => x.id === c.socket.id)));
  };
  const token = async (user: string) => (await sessions.create(user)).id;
  /**
   * `user`'s clients, one per transport in `transports`, then more (cycling through them) until the user has a socket
   * on each worker. least-connection alternates the workers, so usually none more; a handshake retried after sticky's
   * race (see `retried`) leaves the first worker an engine.io session for a while, and the count uneven.
   */
  const spread = async (user: string, transports: Transports[]) => {
    const clients: { client: Client; user: string; transport: Transports }[] = [];
    for (let i = 0; i < transports.length + 4; i++) {
      const transport = transports[i % transports.length];
      clients.push({ client: await connect(url, transport, { token: await token(user) }), user, transport });
      if (i + 1 >= transports.length && new Set(await placement(clients.map((c) => c.client))).size === 2) break;
    }
    return clients;
  };

  beforeAll(async () => {
    const keyPrefix = `gst${randomBytes(4).toString('hex')}:`;
    ({ run, url } = await startCluster(platform, keyPrefix));
    [w0, w1] = run.workers;
    publisher = await createToolkitApp({
      target: { url: redis.server.url },
      keyPrefix,
      commandTimeout: 10_000,
      session: { cookie: { secret: SECRET } },
      pubsub: { durable: true },
    });
    sessions = publisher.get(SessionService);
    // Each worker's adapter has heard the other (its first heartbeat), so the cluster is whole before any case.
    expect(await waitFor(async () => (await states()).every((s) => s.serverCount === 2), 15_000)).toBe(true);
  }, 90_000);

  afterEach(() => {
    closeClients();
    // The client retried no failure but sticky's known race.
    expect(retried.splice(0).filter((failure) => !stickyRace(failure))).toEqual([]);
  });

  afterAll(async () => {
    closeClients();
    await run?.stop();
    await closeToolkitApps();
  });

  it("sticky hands the connections to the Nest app's own HTTP server, which listens on no port", async () => {
    // A request that is not Socket.IO's reaches the app's router through sticky too. On Fastify this needs the
    // fixture's ready(): without it, this request crashed the worker (TypeError in Fastify's hooks), its Socket.IO
    // traffic being served all the same.
    const pages = [];
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${url}/no-such-page`);
      pages.push({ status: res.status, body: (await res.json()) as unknown });
    }
    const all = await states();
    expect({
      workers: all.map((s) => ({ sticky: s.stickyOnAppServer, listening: s.appListening })),
      pages,
      exits: run?.exits(),
    }).toEqual({
      workers: [
        { sticky: true, listening: false },
        { sticky: true, listening: false },
      ],
      pages: [0, 1].map(() => ({
        status: 404,
        body: { statusCode: 404, message: 'Cannot GET /no-such-page', error: 'Not Found' },
      })),
      exits: [],
    });
  });

  it('polling-only and upgraded clients, users on both workers: each notification once per socket, in order; one PUBLISH each', async () => {
    const before = await states();
    // Each user with a polling-only socket and a default one, on both workers.
    const all = [
      ...(await spread('alice', ['polling', 'default'])),
      ...(await spread('bob', ['default', 'polling'])),
      ...(await spread('carol', ['polling', 'default'])),
    ];
    const clients = all.map((c) => c.client);
    const users = all.map((c) => c.user);
    const transports = all.map((c) => c.transport);
    for (const [i, client] of clients.entries()) {
      for (const channel of [`user:${users[i]}`, 'news']) expect(await client.subscribe(channel)).toEqual({ ok: true });
    }
    const where = await placement(clients);
    const socketsOn = (w: number) => where.filter((x) => x === w).length;

    const n = 20;
    const pubsub = publisher.get(PubSubService);
    await resetCommandCalls(redis.server.url);
    for (let i = 0; i < n; i++) {
      for (const user of ['alice', 'bob', 'carol']) await pubsub.notifyUser(user, i);
      await pubsub.publish('news', i);
    }
    expect(await waitFor(() => clients.every((c) => c.got.length >= 2 * n), 20_000)).toBe(true);
    // The default clients have moved to WebSocket (the upgrade's requests, too, reached the worker of their session),
    // but those whose upgrade probe met sticky's race (upgradeFailed), which stay on polling: at least one moved.
    const expectedTransport = (c: Client, i: number) =>
      transports[i] === 'polling' || c.upgradeFailed ? 'polling' : 'websocket';
    const settled = async () => {
      const onServer = (await states()).flatMap((s) => s.sockets);
      return clients.every((c, i) => onServer.find((s) => s.id === c.socket.id)?.transport === expectedTransport(c, i));
    };
    await waitFor(settled, 20_000); // the transports are asserted below, with everything else
    expect(clients.filter((c, i) => expectedTransport(c, i) === 'websocket').length).toBeGreaterThan(0);
    await fence([w0, w1], clients);
    const after = await states();
    const transportOf = (c: Client) =>
      after.flatMap((s) => s.sockets).find((s) => s.id === c.socket.id)?.transport ?? 'gone';
    expect({
      got: clients.map((c) => c.byChannel()),
      clientTransports: clients.map((c) => c.socket.io.engine.transport.name),
      serverTransports: clients.map(transportOf),
      publishes: (await commandCalls(redis.server.url)).publish,
      delivered: after.map((s, i) => s.stats.delivered - before[i].stats.delivered),
      droppedSlow: after.map((s, i) => s.stats.droppedSlow - before[i].stats.droppedSlow),
      usersOnBothWorkers: ['alice', 'bob', 'carol'].map((u) => new Set(where.filter((_, i) => users[i] === u)).size),
    }).toEqual({
      got: users.map((user) => ({ [`user:${user}`]: range(n), news: range(n) })),
      clientTransports: clients.map(expectedTransport),
      serverTransports: clients.map(expectedTransport),
      publishes: 4 * n,
      delivered: [socketsOn(0) * 2 * n, socketsOn(1) * 2 * n],
      droppedSlow: [0, 0],
      usersOnBothWorkers: [2, 2, 2],
    });
  }, 60_000);

  it('authentication holds over polling: no session, a foreign or destroyed one is refused; a revoked socket goes', async () => {
    const before = await states();
    const refused = { data: { code: 'E_UNAUTHENTICATED' } };
    const cookieName = publisher.get<ResolvedRedisToolkitOptions>(REDIS_TOOLKIT_OPTIONS).session.cookie.name;
    const dead = await token('mallory');
    await sessions.destroy(dead);
    await expect(connect(url, 'polling')).rejects.toMatchObject(refused);
    await expect(connect(url, 'polling', { token: 'not-a-session-id' })).rejects.toMatchObject(refused);
    await expect(connect(url, 'polling', { token: dead })).rejects.toMatchObject(refused);
    await expect(connect(url, 'polling', { cookie: `${cookieName}=${dead}` })).rejects.toMatchObject(refused);

    const dave = await token('dave');
    const byToken = await connect(url, 'polling', { token: dave });
    const byCookie = await connect(url, 'polling', {
      cookie: `${cookieName}=${encodeURIComponent(sessions.signedCookieValue(dave))}`,
    });
    for (const client of [byToken, byCookie]) {
      expect(await client.subscribe('user:dave')).toEqual({ ok: true });
      expect(await client.subscribe('user:erin')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
    }
    await publisher.get(PubSubService).notifyUser('dave', 'hello');
    expect(await waitFor(() => byToken.got.length === 1 && byCookie.got.length === 1, 10_000)).toBe(true);
    // Logging out revokes the session on every worker: both polling sockets are disconnected by their server.
    const reasons: string[] = [];
    for (const client of [byToken, byCookie]) client.socket.on('disconnect', (reason) => reasons.push(reason));
    await sessions.destroy(dave);
    expect(await waitFor(() => reasons.length === 2, 10_000)).toBe(true);
    const after = await states();
    expect({
      placement: (await placement([byToken, byCookie])).sort(),
      reasons,
      refused: after.reduce((n, s, i) => n + s.stats.refused - before[i].stats.refused, 0),
      revoked: after.reduce((n, s, i) => n + s.stats.revoked - before[i].stats.revoked, 0),
    }).toEqual({
      placement: [-1, -1],
      reasons: ['io server disconnect', 'io server disconnect'],
      refused: 4,
      revoked: 2,
    });
  }, 60_000);

  // Last: it kills the second worker.
  it('a worker dies: its clients reconnect to the survivor, replay what they missed and get each notification once', async () => {
    if (!run) throw new Error('no cluster');
    const all = [...(await spread('alice', ['polling', 'default'])), ...(await spread('bob', ['default', 'polling']))];
    const clients = all.map((c) => c.client);
    const users = all.map((c) => c.user);
    const resubscribed = users.map(() => 0);
    const refusedAcks: NotificationAck[][] = [];
    for (const [i, client] of clients.entries()) {
      const user = users[i];
      // What an app's client does on each (re)connect: subscribe again, from the last message it got.
      const subscribeAll = async () => {
        const last = client.got.filter((m) => m.channel === `user:${user}`).at(-1)?.id;
        const acks = [await client.subscribe(`user:${user}`, last), await client.subscribe('news')];
        if (acks.every((a) => a.ok)) resubscribed[i]++;
        else refusedAcks.push(acks);
      };
      client.socket.on('connect', () => void subscribeAll());
      await subscribeAll();
    }
    const onDead = (await placement(clients)).map((w) => w === 1);
    expect(['alice', 'bob'].map((u) => onDead.some((dead, i) => users[i] === u && dead))).toEqual([true, true]);

    const pubsub = publisher.get(PubSubService);
    await resetCommandCalls(redis.server.url);
    const round = async (from: number, count: number, news: boolean) => {
      for (let i = from; i < from + count; i++) {
        await pubsub.notifyUser('alice', i);
        await pubsub.notifyUser('bob', i);
        if (news) await pubsub.publish('news', i);
      }
    };
    await round(0, 5, true);
    expect(await waitFor(() => clients.every((c) => c.got.length >= 10), 15_000)).toBe(true);

    process.kill(w1.pid, 'SIGKILL');
    expect(await waitFor(() => run?.exits().some((e) => e.index === 1) === true, 15_000)).toBe(true);
    // While the dead worker's clients reconnect: durable user messages only (they replay them with lastId).
    await round(5, 5, false);
    const back = () => clients.every((c, i) => c.socket.connected && resubscribed[i] === (onDead[i] ? 2 : 1));
    await waitFor(back, 20_000);
    expect({
      connected: clients.map((c) => c.socket.connected),
      resubscribed,
      refusedAcks,
      log: back() ? '' : run.log(),
    }).toEqual({
      connected: clients.map(() => true),
      resubscribed: onDead.map((dead) => (dead ? 2 : 1)),
      refusedAcks: [],
      log: '',
    });
    // The survivor's adapter drops the dead worker once its heartbeats stop (the fixture's timeout: 1 s).
    expect(await waitFor(async () => (await state(w0)).serverCount === 1, 15_000)).toBe(true);
    await round(10, 5, true);
    expect(await waitFor(() => clients.every((c) => c.got.length >= 25), 15_000)).toBe(true);
    await fence([w0], clients);
    const survivor = await state(w0);
    expect({
      got: clients.map((c) => c.byChannel()),
      resubscribed,
      onSurvivor: survivor.sockets.length,
      publishes: (await commandCalls(redis.server.url)).publish,
      exits: run.exits().map(({ index, signal }) => ({ index, signal })),
      primaryRunning: run.running,
      unhandled: [...run.unhandled(), ...survivor.unhandled],
    }).toEqual({
      got: users.map((user) => ({ [`user:${user}`]: range(15), news: [...range(5), ...range(5, 10)] })),
      resubscribed: onDead.map((dead) => (dead ? 2 : 1)),
      onSurvivor: clients.length,
      publishes: 5 * 3 + 5 * 2 + 5 * 3,
      exits: [{ index: 1, signal: 'SIGKILL' }],
      primaryRunning: true,
      unhandled: [],
    });
  }, 90_000);
});
