/**
 * A tiny RESP2 client over a raw TCP socket.
 *
 * The harness uses it instead of ioredis wherever a client library would get in the way: readiness probes
 * (no reconnect/retry logic hiding a dead server), fault-injection checks ("is the port refusing connections?",
 * "does a SIGSTOPped server stay silent?") and one-shot admin commands (FLUSHALL, CLUSTER INFO, ROLE).
 * Every call opens a fresh connection and always closes it, so nothing is left open for jest to complain about.
 */
import { connect, type Socket } from 'node:net';
import { RedisReplyError, RedisUnavailableError } from '../common/errors.js';

/** An error reply (`-ERR ...`). Returned inside the reply list, not thrown, so a pipeline can be inspected. */
export class RespError extends Error {
  override readonly name = 'RespError';
}

export type RespValue = string | number | null | RespError | RespValue[];

export interface RawAuth {
  /** Omit for `requirepass`-style auth (the default user). */
  readonly username?: string;
  readonly password: string;
}

export interface RawCommandOptions {
  readonly host?: string;
  /** Budget for connect + all replies. Default 2000 ms. */
  readonly timeoutMs?: number;
  /** Sent as `AUTH` before the commands; its reply is not included in the result. */
  readonly auth?: RawAuth;
}

/** Error raised when the server does not answer within `timeoutMs`; `code` is `'ETIMEDOUT'`. */
export class RawTimeoutError extends Error {
  override readonly name = 'RawTimeoutError';
  readonly code = 'ETIMEDOUT';
}

function encode(args: readonly string[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.from(arg, 'utf8');
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** Parses one RESP2 value at `offset`; returns undefined when the buffer does not hold a complete value yet. */
function parse(buf: Buffer, offset: number): { value: RespValue; next: number } | undefined {
  const lineEnd = buf.indexOf('\r\n', offset);
  if (lineEnd === -1) return undefined;
  const type = String.fromCharCode(buf[offset] ?? 0);
  const line = buf.toString('utf8', offset + 1, lineEnd);
  const afterLine = lineEnd + 2;
  switch (type) {
    case '+':
      return { value: line, next: afterLine };
    case '-':
      return { value: new RespError(line), next: afterLine };
    case ':':
      return { value: Number(line), next: afterLine };
    case '$': {
      const len = Number(line);
      if (len < 0) return { value: null, next: afterLine };
      if (buf.length < afterLine + len + 2) return undefined;
      return { value: buf.toString('utf8', afterLine, afterLine + len), next: afterLine + len + 2 };
    }
    case '*': {
      const count = Number(line);
      if (count < 0) return { value: null, next: afterLine };
      const items: RespValue[] = [];
      let next = afterLine;
      for (let i = 0; i < count; i++) {
        const item = parse(buf, next);
        if (!item) return undefined;
        items.push(item.value);
        next = item.next;
      }
      return { value: items, next };
    }
    default:
      // not a Redis at the other end (an HTTP server on the port, say): as good as none
      throw new RedisUnavailableError(`unexpected RESP type byte ${JSON.stringify(type)}`);
  }
}

/**
 * Sends `commands` pipelined on a fresh connection and resolves with one reply per command.
 * Rejects with the socket error (e.g. `code: 'ECONNREFUSED'`), a {@link RawTimeoutError}, a RedisUnavailableError when
 * the peer closes the connection early or answers with something that is not RESP, or a RedisReplyError (`replyCode`
 * `WRONGPASS`...) when it refuses the AUTH.
 */
export function rawCommands(
  port: number,
  commands: readonly (readonly string[])[],
  opts: RawCommandOptions = {},
): Promise<RespValue[]> {
  const { host = '127.0.0.1', timeoutMs = 2000, auth } = opts;
  const wire: Buffer[] = [];
  if (auth)
    wire.push(encode(auth.username === undefined ? ['AUTH', auth.password] : ['AUTH', auth.username, auth.password]));
  for (const cmd of commands) wire.push(encode(cmd));
  const expected = wire.length;

  return new Promise<RespValue[]>((resolve, reject) => {
    const socket: Socket = connect({ host, port });
    let buf = Buffer.alloc(0);
    let offset = 0;
    const replies: RespValue[] = [];
    let settled = false;

    const finish = (err: Error | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) {
        reject(err);
        return;
      }
      if (auth) {
        const authReply = replies.shift();
        if (authReply instanceof RespError) {
          const replyCode = authReply.message.split(' ', 1)[0];
          reject(new RedisReplyError(`AUTH failed on ${host}:${port}: ${authReply.message}`, replyCode));
          return;
        }
      }
      resolve(replies);
    };
    const timer = setTimeout(
      () => finish(new RawTimeoutError(`no complete answer from ${host}:${port} within ${timeoutMs} ms`)),
      timeoutMs,
    );

    socket.on('connect', () => socket.write(Buffer.concat(wire)));
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      try {
        for (let item = parse(buf, offset); item; item = parse(buf, offset)) {
          replies.push(item.value);
          offset = item.next;
        }
      } catch (err) {
        finish(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      if (replies.length >= expected) finish(undefined);
    });
    socket.on('error', (err) => finish(err));
    socket.on('close', () =>
      finish(
        new RedisUnavailableError(
          `${host}:${port} closed the connection after ${replies.length}/${expected} replies: ` +
            `${JSON.stringify(replies.map(String))}`,
        ),
      ),
    );
  });
}

/** Single-command convenience wrapper around {@link rawCommands}; an error reply is thrown. */
export async function rawCommand(
  port: number,
  args: readonly string[],
  opts: RawCommandOptions = {},
): Promise<RespValue> {
  const [reply] = await rawCommands(port, [args], opts);
  if (reply instanceof RespError) throw reply;
  return reply ?? null;
}

export type PingOutcome = 'pong' | 'refused' | 'timeout' | 'error';

/**
 * Classifies what a raw PING gets: `'pong'`, `'refused'` (nothing listening), `'timeout'` (connected or
 * connecting but no answer, e.g. a SIGSTOPped server) or `'error'` (anything else, e.g. NOAUTH).
 */
export async function probePing(port: number, opts: RawCommandOptions = {}): Promise<PingOutcome> {
  try {
    const reply = await rawCommand(port, ['PING'], opts);
    return reply === 'PONG' ? 'pong' : 'error';
  } catch (err) {
    if (err instanceof RawTimeoutError) return 'timeout';
    if (errorCode(err) === 'ECONNREFUSED') return 'refused';
    return 'error';
  }
}

/**
 * `err.code` of a Node system error. Checked structurally, not with `instanceof Error`: under jest, errors thrown
 * by Node's core modules come from the host realm and are not instances of the test sandbox's `Error`.
 */
export function errorCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null || !('code' in err)) return undefined;
  return typeof err.code === 'string' ? err.code : undefined;
}
