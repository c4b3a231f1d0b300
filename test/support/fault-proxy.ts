/**
 * A TCP proxy for fault injection: listens on a free loopback port and forwards every connection to a Redis (or
 * anything else). Put it between the code under test and the server, then break the link on purpose:
 *
 *  - `delay(ms)`    every chunk, in both directions, is held `ms` before it is forwarded (order is kept);
 *  - `blackhole()`  connections are still accepted and stay open, but every byte in either direction is dropped
 *                   (a dead route, a switch eating packets: the client sees silence, not an error);
 *  - `resetAll()`   every open connection is reset (TCP RST to the client, upstream socket destroyed);
 *  - `resetOn(text)` a connection is reset, instead of forwarded, when the client sends `text` (e.g. a QUIT);
 *  - `rewriteReplies(from, to)` every `from` in what the server sends is replaced by `to`, of the same byte length
 *                   (a RESP length prefix stays right): `redis_version:7.0.15` read as `redis_version:6.0.16`;
 *  - `refuse()`     stop listening (new connects get ECONNREFUSED) and reset the open connections: "server gone";
 *  - `restore()`    undo all of the above: no delay, no blackhole, no resetOn, no rewrite, listening again on the same
 *                   port;
 *  - `close()`      stop for good.
 *
 * Everything is loopback only. Socket errors are swallowed (they are the point), so a fault never surfaces as an
 * uncaught exception in the test process itself.
 */
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

export interface FaultProxyTarget {
  host?: string;
  port: number;
}

export interface FaultProxyStats {
  /** Connections accepted since start. */
  accepted: number;
  /** Connections open now. */
  open: number;
  /** Chunks dropped by blackhole(). */
  droppedChunks: number;
  /** Connections reset by resetAll() / refuse() / resetOn(). */
  resets: number;
  /** Occurrences of rewriteReplies()'s `from` replaced in replies. */
  rewrites: number;
}

const HOST = '127.0.0.1';

/** One direction of one connection: forwards chunks in order, each no earlier than its arrival + delay. */
class Pipe {
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly proxy: FaultProxy,
    private readonly to: Socket,
  ) {}

  push(chunk: Buffer): void {
    if (this.proxy.isBlackholed) {
      this.proxy.stats.droppedChunks++;
      return;
    }
    const delayMs = this.proxy.delayMs;
    if (delayMs <= 0) {
      // Keep order with chunks still waiting from an earlier delay.
      this.chain = this.chain.then(() => this.write(chunk));
      return;
    }
    const due = Date.now() + delayMs;
    this.chain = this.chain.then(async () => {
      const wait = due - Date.now();
      if (wait > 0) await new Promise<void>((resolve) => this.proxy.timer(resolve, wait));
      this.write(chunk);
    });
  }

  private write(chunk: Buffer): void {
    // A blackhole switched on while the chunk waited still eats it.
    if (this.proxy.isBlackholed) {
      this.proxy.stats.droppedChunks++;
      return;
    }
    if (!this.to.destroyed && this.to.writable) this.to.write(chunk);
  }
}

interface Link {
  client: Socket;
  upstream: Socket;
  /** The end of the last reply chunk that may be the start of a `from` split across chunks: held back. */
  held: Buffer;
}

/** Where `from` may start in the last bytes of `data` (a match split across chunks): that index, or data.length. */
function partialMatchAt(data: Buffer, from: Buffer): number {
  for (let i = Math.max(0, data.length - from.length + 1); i < data.length; i++) {
    if (from.subarray(0, data.length - i).equals(data.subarray(i))) return i;
  }
  return data.length;
}

export class FaultProxy {
  readonly host = HOST;
  readonly stats: FaultProxyStats = { accepted: 0, open: 0, droppedChunks: 0, resets: 0, rewrites: 0 };
  delayMs = 0;
  isBlackholed = false;
  private resetText: string | undefined;
  private rewrite: { from: Buffer; to: Buffer } | undefined;
  private server: Server | undefined;
  private readonly links = new Set<Link>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  private constructor(
    private readonly target: Required<FaultProxyTarget>,
    private listenPort: number,
  ) {}

  /** Starts a proxy to `target` on a free loopback port (or `port`). */
  static async start(target: FaultProxyTarget, port = 0): Promise<FaultProxy> {
    const proxy = new FaultProxy({ host: target.host ?? HOST, port: target.port }, port);
    await proxy.listen();
    return proxy;
  }

  get port(): number {
    return this.listenPort;
  }

  /** `redis://127.0.0.1:<proxy port>` */
  get url(): string {
    return `redis://${HOST}:${this.listenPort}`;
  }

  /** Holds every chunk in both directions for `ms` (0 = no delay). Applies to chunks arriving from now on. */
  delay(ms: number): void {
    this.delayMs = Math.max(0, ms);
  }

  /** Accepts and keeps connections, silently drops all traffic. */
  blackhole(): void {
    this.isBlackholed = true;
  }

  /** Resets every open connection (RST to the client side). New connections are still accepted. */
  resetAll(): void {
    for (const link of [...this.links]) this.reset(link);
  }

  /**
   * Resets a connection (RST to the client) when a chunk from the client contains `text`, compared without case
   * (`'$4\r\nquit\r\n'`: at its QUIT); the chunk is not forwarded. `undefined` turns it off.
   */
  resetOn(text: string | undefined): void {
    this.resetText = text?.toLowerCase();
  }

  /**
   * Replaces every `from` in what the server sends by `to` (`undefined`: off), e.g. the `redis_version:` line of INFO:
   * the same byte length, so the length prefix of the RESP reply holding it stays right. A `from` split across two
   * chunks is found too: the end of a chunk that may begin one is held until the next chunk (a RESP reply ends with
   * CRLF, so a whole reply is never held while `from` starts with neither CR nor LF).
   */
  rewriteReplies(from: string | undefined, to = ''): void {
    if (from === undefined) {
      this.rewrite = undefined;
      return;
    }
    const rewrite = { from: Buffer.from(from), to: Buffer.from(to) };
    if (rewrite.from.length !== rewrite.to.length || rewrite.from.length === 0 || /^[\r\n]/.test(from)) {
      throw new Error(`rewriteReplies needs a from and a to of one byte length, from not starting with CR/LF`);
    }
    this.rewrite = rewrite;
  }

  /** Stops listening (connects are refused) and resets every open connection. */
  async refuse(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.resetAll();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Back to a clean link: no delay, no blackhole, listening again on the same port. */
  async restore(): Promise<void> {
    this.delayMs = 0;
    this.isBlackholed = false;
    this.resetText = undefined;
    this.rewrite = undefined;
    // Links whose server went away while blackholed: close them now, as an unbroken link would have.
    for (const link of [...this.links]) {
      if (link.upstream.destroyed) {
        this.links.delete(link);
        link.client.destroy();
      }
    }
    this.stats.open = this.links.size;
    if (!this.server && !this.closed) await this.listen();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.refuse();
  }

  /** setTimeout tracked so close() can clear it (a pending timer would keep jest alive). */
  timer(fn: () => void, ms: number): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  private listen(): Promise<void> {
    const server = createServer((client) => this.accept(client));
    return new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.listenPort, HOST, () => {
        server.off('error', reject);
        server.on('error', () => undefined);
        this.listenPort = (server.address() as AddressInfo).port;
        this.server = server;
        resolve();
      });
    });
  }

  private accept(client: Socket): void {
    this.stats.accepted++;
    const upstream = connect({ host: this.target.host, port: this.target.port });
    const link: Link = { client, upstream, held: Buffer.alloc(0) };
    this.links.add(link);
    this.stats.open = this.links.size;
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const toUpstream = new Pipe(this, upstream);
    const toClient = new Pipe(this, client);
    client.on('data', (chunk: Buffer) => {
      if (this.resetText !== undefined && chunk.toString('latin1').toLowerCase().includes(this.resetText)) {
        this.reset(link);
        return;
      }
      toUpstream.push(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      const out = this.rewritten(link, chunk);
      if (out.length > 0) toClient.push(out);
    });
    const drop = (): void => {
      if (!this.links.delete(link)) return;
      this.stats.open = this.links.size;
      if (!client.destroyed) client.destroy();
      if (!upstream.destroyed) upstream.destroy();
    };
    // When the server goes away, the client should see its connection close (as it would without the proxy).
    // While blackholed, a dead server is not reported either: silence is the fault.
    upstream.on('error', () => {
      if (!this.isBlackholed) drop();
    });
    upstream.on('close', () => {
      if (!this.isBlackholed) drop();
    });
    client.on('error', drop);
    client.on('close', drop);
  }

  /** A reply chunk with rewriteReplies()'s replacements made, less the end held back for the next chunk. */
  private rewritten(link: Link, chunk: Buffer): Buffer {
    const rewrite = this.rewrite;
    if (rewrite === undefined && link.held.length === 0) return chunk;
    const data = Buffer.concat([link.held, chunk]);
    link.held = Buffer.alloc(0);
    if (rewrite === undefined) return data;
    for (let at = data.indexOf(rewrite.from); at !== -1; at = data.indexOf(rewrite.from, at + rewrite.from.length)) {
      rewrite.to.copy(data, at);
      this.stats.rewrites++;
    }
    const keep = partialMatchAt(data, rewrite.from);
    link.held = Buffer.from(data.subarray(keep));
    return data.subarray(0, keep);
  }

  private reset(link: Link): void {
    this.links.delete(link);
    this.stats.open = this.links.size;
    this.stats.resets++;
    // resetAndDestroy sends an RST instead of a FIN (Node >= 16.17).
    if (!link.client.destroyed) link.client.resetAndDestroy();
    if (!link.upstream.destroyed) link.upstream.destroy();
  }
}

/** Starts a proxy to `target`; remember to `close()` it (trackForCleanup accepts `{ stop }`, so wrap it). */
export function startFaultProxy(target: FaultProxyTarget, port = 0): Promise<FaultProxy> {
  return FaultProxy.start(target, port);
}
