// How RedisConnection waits for a client to be ready (and the ACL check waits for one to be ready again), and closes
// one it created.
import { Cluster } from 'ioredis';
import { replyCodeOf } from '../common/failure-policy.js';
import type { RedisClient } from '../common/lua-script.js';
import { withTimeout } from '../common/timeout.js';

const QUIT_TIMEOUT_MS = 1_000;

/**
 * Until `client` is ready. A transport error rejects at once (the server is down). An error reply does not: ioredis
 * emits one for a SELECT that failed while connecting and then becomes ready all the same (verifyServer says why);
 * when the connection closes instead (its ready check's INFO failed), that reply is the reason. `signal`: the caller
 * gave up (its timeout); the wait rejects with its reason and takes its listeners off the client at once (until
 * 2026-12-05 a start that timed out left them on a `{ client }` of the user's until its next 'ready', 'error' or
 * 'close': connection-leaks.spec.ts).
 */
export function waitForReady(client: RedisClient, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    let reply: Error | undefined;
    const settle = (done: () => void) => {
      client.off('ready', onReady);
      client.off('error', onError);
      client.off('close', onClose);
      signal?.removeEventListener('abort', onAbort);
      done();
    };
    const onReady = () => settle(resolve);
    const onError = (err: Error) => {
      if (replyCodeOf(err) === undefined) settle(() => reject(err));
      else reply = err;
    };
    const onClose = () => {
      if (reply !== undefined) settle(() => reject(reply));
    };
    const onAbort = () => settle(() => reject(signal?.reason));
    client.on('ready', onReady);
    client.on('error', onError);
    client.on('close', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Quits `client` (QUIT, answered within 1 s, else a reset); a client not ready is reset at once. */
export async function closeClient(client: RedisClient): Promise<void> {
  if (client.status === 'end') return;
  if (client.status !== 'ready') {
    client.disconnect();
    return;
  }
  try {
    await withTimeout(client.quit(), QUIT_TIMEOUT_MS, 'quit timed out');
  } catch {
    client.disconnect();
  }
}

/**
 * Before verifyPermissions' next attempt, on a server or a cluster: the toolkit drops a connection whose command timed
 * out (resetOnCommandTimeout), and an attempt made at once would fail on it ("Stream isn't writeable": its status still
 * says ready until the socket's close is handled). Waits for it to be ready again, at most its connectTimeout +
 * commandTimeout (and `maxMs`, what the check has left); past that the attempt is made all the same (and fails, typed).
 */
export async function readyAgain(client: RedisClient, maxMs: number): Promise<void> {
  const usable =
    client instanceof Cluster ? client.status === 'ready' : client.status === 'ready' && client.stream.writable;
  // Closed (shutdown): nothing to wait for, the attempt fails at once.
  if (usable || client.status === 'end') return;
  const options = client instanceof Cluster ? client.options.redisOptions : client.options;
  const ms = Math.max(0, Math.min((options?.connectTimeout ?? 10_000) + (options?.commandTimeout ?? 0), maxMs));
  let onReady: (() => void) | undefined;
  try {
    await withTimeout(
      new Promise<void>((resolve) => {
        onReady = resolve;
        client.once('ready', resolve);
        client.once('end', resolve);
      }),
      ms,
      'not ready',
    );
  } catch {
    // not ready in time: the attempt says so
  } finally {
    if (onReady) {
      client.off('ready', onReady);
      client.off('end', onReady);
    }
  }
}

/**
 * RedisConnection.waitUntilReady's wait: connects a lazy client (or waits for a connecting one), then PINGs it. A
 * server that is slow to answer its first command (the ready check's INFO, a cluster's CLUSTER SLOTS: each bounded by
 * commandTimeout) gets until `deadline`: ioredis tries again by itself, and the next attempt may be answered. A
 * refusal or an error reply still fails at once. `lastError`: the connection's last error event, which says why where
 * "Connection is closed." (a cluster's "None of startup nodes is available") does not.
 */
export async function connectAndPing(
  client: RedisClient,
  deadline: number,
  signal: AbortSignal,
  lastError: () => Error | undefined,
): Promise<void> {
  for (;;) {
    try {
      await (client.status === 'wait' ? client.connect() : waitForReady(client, signal));
      break;
    } catch (err) {
      if (signal.aborted || replyCodeOf(err) !== undefined || Date.now() >= deadline) throw err;
      if (!timedOut(err) && !timedOut(lastError())) throw err;
    }
  }
  await client.ping();
}

/** ioredis's timeouts carry no code: a command's (`Command timed out`) and a cluster's slot refresh's. */
function timedOut(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const node = (err as { lastNodeError?: unknown }).lastNodeError;
  return /timed out|\(timeout\)/.test(err.message) || (node !== undefined && timedOut(node));
}
