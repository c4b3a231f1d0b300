// What RedisConnection learns from a server that closes its connections without an error: redis.conf `timeout` (an
// idle connection), `client-output-buffer-limit` (a reply too large, with calls in flight) and `maxclients` (a new
// connection refused). ioredis reports none of them by name: a close, "Connection is closed.", `write EPIPE`.
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { RedisClient } from '../common/lua-script.js';
import { repliesAwaited } from './redis-client.factory.js';

/**
 * A close after less idleness is not taken for an idle timeout (redis.conf `timeout` counts whole seconds, from the
 * server's last reply: a little less is seen here).
 */
const MIN_IDLE_CLOSE_MS = 500;
/** The keepalive PINGs an idle connection at most this often. */
const MIN_KEEPALIVE_MS = 250;
/**
 * A `timeout` of T s closes a connection idle for T to T + 1 s (whole seconds, checked by the server's cron), so the
 * idleness seen at a close is at most about twice T: a PING after a tenth of it (at most a fifth, with the timer's
 * period, and 500 ms at the floor) comes in time with room for a busy event loop (a sixth left 334 ms at `timeout 1`).
 */
const KEEPALIVE_SHARE = 10;

/** What the server says, unasked, to a connection it refuses: read for at most this long (ms). */
const REFUSAL_PROBE_MS = 1_000;

/** ioredis's errors for a connection the server accepted and then closed (no reply of its own reached ioredis). */
const CLOSED_AT_ONCE = /EPIPE|ECONNRESET|Connection is closed/;
/**
 * The line of a server past its `maxclients`, as ioredis may read it: the reply to its first handshake command (HELLO),
 * when that was written before the line came.
 */
const MAX_CLIENTS = /max number of clients/i;

/** Why the failed calls failed, for a connection closed with `count` calls awaiting replies. */
export function closedWithCallsInFlight(count: number): string {
  return (
    `Redis closed the connection with ${count} call${count === 1 ? '' : 's'} awaiting replies, without an error ` +
    'reply: a server restart or shutdown, CLIENT KILL, a proxy or a load balancer closes it so; so does a reply ' +
    'larger than its client-output-buffer-limit for normal clients (a large cache value or session), again at each ' +
    'read of that value: then raise the limit or keep values smaller'
  );
}

/**
 * A connection the server refused, with what it said (refusalOf): `maxclients` (`ERR max number of clients reached`)
 * in the toolkit's words, any other line as the server wrote it. connectError makes it a RedisUnavailableError.
 */
export class ServerRefusal extends Error {
  constructor(readonly line: string) {
    super(
      MAX_CLIENTS.test(line)
        ? `the server refused the connection: ${line}: it has as many clients as its maxclients setting allows ` +
            '(redis.conf maxclients; INFO clients has connected_clients and maxclients). Raise maxclients, or close ' +
            'the clients that hold its connections'
        : `the server refused the connection: ${line}`,
    );
  }
}

/**
 * The error line a server sends, unasked, to a connection it refuses (Redis past `maxclients`: `-ERR max number of
 * clients reached`, then a close), read on a connection of its own that sends nothing: ioredis writes its handshake
 * at once and reports only that the write failed. Undefined when nothing comes within `ms` (the server accepted it),
 * and for a Sentinel setup (whose master's address ioredis looks up itself).
 */
export async function refusalOf(client: Redis, ms = REFUSAL_PROBE_MS): Promise<ServerRefusal | undefined> {
  if ((client.options.sentinels?.length ?? 0) > 0) return undefined;
  const line = await firstLine(client.options, ms);
  return line?.startsWith('-') ? new ServerRefusal(line.slice(1)) : undefined;
}

/**
 * The first line the server at `o`'s address writes on a connection of its own, after `send` (nothing: what it says
 * unasked); undefined when none comes within `ms` (refused, reset, silent).
 */
function firstLine(o: RedisOptions, ms: number, send?: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    let socket: Socket;
    try {
      const { host = '127.0.0.1', port = 6379 } = o;
      socket = o.path ? netConnect(o.path) : o.tls ? tlsConnect({ ...o.tls, host, port }) : netConnect(port, host);
    } catch {
      resolve(undefined);
      return;
    }
    let text = '';
    const done = (line: string | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(line);
    };
    const timer = setTimeout(() => done(undefined), ms);
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      const end = text.indexOf('\r\n');
      if (end >= 0) done(text.slice(0, end));
    });
    socket.on('error', () => done(undefined));
    socket.on('close', () => done(undefined));
    if (send !== undefined) socket.write(send);
  });
}

/**
 * Whether `err` says the server closed the connection under us (no reply of its own reached ioredis). Not `instanceof
 * Error`: Node's socket errors may come from another realm (a test runner's VM context).
 */
export function closedAtOnce(err: unknown): boolean {
  const message = (err as { message?: unknown } | null | undefined)?.message;
  return typeof message === 'string' && CLOSED_AT_ONCE.test(message);
}

interface Watched {
  /** When the connection last heard from the server (performance.now()). */
  heardAt: number;
  /** Connected and not ready yet: a close now is a refusal. */
  handshaking: boolean;
  /** The idleness (ms) at an idle close, until the reconnect (learnt if it succeeds at once, forgotten on an error). */
  idleClose?: number;
  /** An error while handshaking: a reply (WRONGPASS...) says why already, no refusal to look for. */
  handshakeError?: Error;
  /** Takes its listeners off the client and its socket: a `{ client }` of the user's outlives the app. */
  off: () => void;
}

export interface ServerClosesListener {
  /**
   * A close that failed calls (`callsFailed`), or will until the reconnect (an idle close): `why` is the connection's
   * last error from now on.
   */
  closed(client: Redis, why: Error, callsFailed: boolean): void;
  /** Connected, then closed before it was ready: the server may have refused it (refusalOf says). */
  refused(client: Redis): void;
  /** The first idle close that was followed by an immediate reconnect: the keepalive starts. */
  keepingAlive(message: string): void;
}

/**
 * The connections of one RedisConnection (standalone and Sentinel clients, the subscribers and node connections it
 * makes, a cluster's own node connections, a `{ client }` of the user's and its nodes) and what their closes say:
 * - closed while idle (nothing awaited a reply, nothing heard for MIN_IDLE_CLOSE_MS) and reconnected at once: a
 *   `timeout` in redis.conf, or a proxy's idle timeout. Each such close fails the calls made until the reconnect (fail
 *   open, 503), empties the cache's L1 and has health say `down` meanwhile: with `timeout 1`, every idle second. From
 *   the first one, each connection that stays idle for a tenth of the idleness seen then is PINGed, so none is closed
 *   again (pub/sub connections are exempt from `timeout` and are left alone). A connection that does not reconnect
 *   itself (a cluster's node connection, which the cluster replaces: ioredis gives it no retryStrategy) counts when
 *   the server answers a PING on a connection of its own instead (learnIfAnswering): one that went away does not;
 * - closed or reset with calls awaiting replies: those calls fail with "Connection is closed." or ECONNRESET, which
 *   say nothing of why; the connection's last error then does (closedWithCallsInFlight).
 */
export class ServerCloses {
  private readonly watched = new Map<Redis, Watched>();
  /** The clusters whose node connections are watched as they come and go, with what takes their listeners off. */
  private readonly clusters = new Map<Cluster, () => void>();
  private keepAliveMs: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly listener: ServerClosesListener,
    /** The connections are being closed on purpose (app.close()): nothing is learnt. */
    private readonly quitting: () => boolean,
  ) {}

  /** Watches `client` (every node connection of a cluster, as they come); unwatch or close takes it off. */
  watch(client: RedisClient): void {
    if (this.closed) return;
    if (client instanceof Cluster) this.watchCluster(client);
    if (client instanceof Cluster || this.watched.has(client)) return;
    const state: Watched = { heardAt: performance.now(), handshaking: false, off: () => undefined };
    let socket: Redis['stream'] | undefined;
    const heard = () => {
      state.heardAt = performance.now();
    };
    // A FIN from the server: before ioredis's close, which rejects (and forgets) the calls in flight.
    const ended = () => this.ended(client, state);
    const listen = () => {
      socket?.off('data', heard);
      socket?.off('end', ended);
      socket = client.stream;
      socket.on('data', heard);
      socket.once('end', ended);
    };
    const onConnect = () => {
      state.heardAt = performance.now();
      state.handshaking = true;
      state.handshakeError = undefined;
      listen();
    };
    const onReady = () => {
      state.handshaking = false;
      if (state.idleClose !== undefined) this.learn(state.idleClose);
      state.idleClose = undefined;
    };
    const onError = (err: Error) => {
      state.idleClose = undefined; // the reconnect failed: a server that went away, not an idle timeout
      if (state.handshaking) state.handshakeError ??= err;
    };
    const onClose = () => {
      const err = state.handshakeError;
      if (state.handshaking && !this.quitting() && (err === undefined || closedAtOnce(err)))
        this.listener.refused(client);
      state.handshaking = false;
    };
    client.on('connect', onConnect);
    client.on('ready', onReady);
    client.on('error', onError);
    client.on('close', onClose);
    // Connected before it was watched (a `{ client }` of the user's, a cluster's node): its socket from now on.
    if (client.status === 'ready' || client.status === 'connect') listen();
    state.off = () => {
      client.off('connect', onConnect);
      client.off('ready', onReady);
      client.off('error', onError);
      client.off('close', onClose);
      socket?.off('data', heard);
      socket?.off('end', ended);
    };
    this.watched.set(client, state);
  }

  unwatch(client: RedisClient): void {
    if (client instanceof Cluster) {
      this.clusters.get(client)?.();
      this.clusters.delete(client);
      return;
    }
    this.watched.get(client)?.off();
    this.watched.delete(client);
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    for (const off of this.clusters.values()) off();
    for (const state of this.watched.values()) state.off();
    this.clusters.clear();
    this.watched.clear();
  }

  /**
   * A cluster's node connections: ioredis opens one per node (`+node`), and drops one for good when it closes
   * (`-node`; it opens another when a command needs that node). Without a keepalive `timeout 1` closed each idle one
   * every second.
   */
  private watchCluster(cluster: Cluster): void {
    if (this.clusters.has(cluster)) return;
    const added = (node: Redis) => this.watch(node);
    const removed = (node: Redis) => this.unwatch(node);
    cluster.on('+node', added);
    cluster.on('-node', removed);
    for (const node of cluster.nodes()) this.watch(node);
    this.clusters.set(cluster, () => {
      cluster.off('+node', added);
      cluster.off('-node', removed);
      for (const node of cluster.nodes()) this.unwatch(node);
    });
  }

  private ended(client: Redis, state: Watched): void {
    // writableEnded: the toolkit closed it (a command timeout drops the connection), the server only answered that
    if (client.status !== 'ready' || client.stream.writableEnded || this.quitting()) return;
    const pending = repliesAwaited(client);
    if (pending > 0) {
      this.listener.closed(client, new Error(closedWithCallsInFlight(pending)), true);
      return;
    }
    const idle = performance.now() - state.heardAt;
    if (idle < MIN_IDLE_CLOSE_MS || subscribed(client)) return;
    state.idleClose = idle;
    const seconds = (idle / 1_000).toFixed(1);
    const why = `Redis closed the connection after it was idle for ${seconds} s`;
    this.listener.closed(client, new Error(`${why} (redis.conf timeout, or a proxy's idle timeout)`), false);
    // No reconnect of its own to tell an idle timeout from a server that went away: a connection of ours asks.
    if (typeof client.options.retryStrategy !== 'function') void this.learnIfAnswering(client.options, idle);
  }

  private async learnIfAnswering(options: RedisOptions, idleMs: number): Promise<void> {
    if ((await firstLine(options, REFUSAL_PROBE_MS, 'PING\r\n')) !== undefined && !this.quitting()) this.learn(idleMs);
  }

  private learn(idleMs: number): void {
    if (this.closed) return;
    const every = Math.max(MIN_KEEPALIVE_MS, Math.floor(idleMs / KEEPALIVE_SHARE));
    if (this.keepAliveMs !== undefined && this.keepAliveMs <= every) return;
    this.keepAliveMs = every;
    clearInterval(this.timer);
    this.timer = setInterval(() => this.keepAlive(every), every);
    this.timer.unref();
    this.listener.keepingAlive(
      `closed a connection idle for ${(idleMs / 1_000).toFixed(1)} s, with no error (its \`timeout\` setting, or a ` +
        "proxy's idle timeout): the calls made until it reconnected failed as in an outage. From now on each of the " +
        `toolkit's connections to it that is idle for ${every} ms gets a PING, so none is closed again (set timeout ` +
        '0, or longer than the app is ever idle, to do without)',
    );
  }

  private keepAlive(every: number): void {
    const now = performance.now();
    for (const [client, state] of this.watched) {
      if (client.status !== 'ready' || subscribed(client) || now - state.heardAt < every) continue;
      client.ping().catch(() => undefined); // a failure is the connection's own business (reconnect, timeout)
    }
  }
}

/** A connection in subscribed mode: exempt from `timeout`, and its replies are messages. */
function subscribed(client: Redis): boolean {
  return Boolean((client as unknown as { condition?: { subscriber?: unknown } | null }).condition?.subscriber);
}

/** What ServerRefusals asks of its RedisConnection. */
export interface RefusalsHost {
  /** The connections are being closed on purpose (app.close()): nothing is probed or said. */
  quitting(): boolean;
  /** How long a probe waits for the server's line (ms). */
  probeMs(): number;
  /** The server said why it refused `client`: its last error from now on (and warned once). */
  refused(client: Redis, refusal: ServerRefusal): void;
}

/**
 * A RedisConnection's connections the server refused, and why (refusalOf: maxclients): what a refused connection's
 * errors say until it is ready again, and the words for a reset that ioredis reports as EPIPE or ECONNRESET alone.
 */
export class ServerRefusals {
  /** The probe of a refused connection under way, by client: one at a time. */
  private readonly probes = new WeakMap<Redis, Promise<ServerRefusal | undefined>>();
  /** What the server said refusing a client's connection, until it is ready again. */
  private readonly refusals = new WeakMap<Redis, ServerRefusal>();

  constructor(private readonly host: RefusalsHost) {}

  /** `client` is ready: what refused it before is over. */
  ready(client: Redis): void {
    this.refusals.delete(client);
  }

  /**
   * Why the server closed `client`'s connection before it was ready, when it said so; undefined when it said nothing
   * within the host's probeMs.
   */
  name(client: Redis): Promise<ServerRefusal | undefined> {
    let probe = this.probes.get(client);
    if (probe !== undefined) return probe;
    probe = refusalOf(client, this.host.probeMs()).then((refusal) => {
      this.probes.delete(client);
      if (refusal === undefined || this.host.quitting() || client.status === 'ready') return undefined;
      this.refusals.set(client, refusal);
      this.host.refused(client, refusal);
      return refusal;
    });
    this.probes.set(client, probe);
    return probe;
  }

  /**
   * The refusal behind a failed connect: the one known (`last`, the connection's last error), or, for a connection
   * accepted and then closed before any reply (`write EPIPE`, "Connection is closed."), what the server said first
   * (maxclients), which ioredis never read.
   */
  behind(client: RedisClient, last: Error | undefined, err: unknown): Promise<ServerRefusal | undefined> {
    if (last instanceof ServerRefusal) return Promise.resolve(last);
    return client instanceof Redis && closedAtOnce(last ?? err) ? this.name(client) : Promise.resolve(undefined);
  }

  /**
   * A connection error in words that say why, where ioredis's do not: a reset of a ready connection with calls in
   * flight (client-output-buffer-limit), a refused connection whose server said why (maxclients).
   */
  why(client: Redis, err: Error): Error {
    if (client.status !== 'ready' && !(err instanceof ServerRefusal) && MAX_CLIENTS.test(err.message)) {
      const refusal = new ServerRefusal(err.message); // read by ioredis as the reply to its HELLO
      this.refusals.set(client, refusal);
      return refusal;
    }
    if (!closedAtOnce(err)) return err;
    if (client.status !== 'ready') return this.refusals.get(client) ?? err;
    const pending = client.stream.writableEnded ? 0 : repliesAwaited(client);
    return pending > 0 ? new Error(`${err.message}: ${closedWithCallsInFlight(pending)}`, { cause: err }) : err;
  }
}
