// How RedisConnection waits for a client to be ready, and closes one it created.
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
