/**
 * Jest helpers for servers owned by a single test file. Use a private server whenever a test kills, pauses,
 * restarts or reconfigures Redis — never do that to the shared servers (shared-servers.ts).
 *
 * Import this module statically from the test file: it registers root-level hooks while the file is collected.
 */
import { startRedisServer, type RedisServerHandle, type RedisServerOptions } from './redis-server.js';

/** Anything trackForCleanup can dispose of: server/cluster handles, or ioredis clients (Redis, Cluster). */
export type Disposable =
  | { stop(): Promise<void> }
  | { readonly status: string; quit(): Promise<unknown>; disconnect(): void };

const QUIT_BUDGET_MS = 1000;

async function dispose(resource: Disposable): Promise<void> {
  if ('stop' in resource) {
    await resource.stop();
    return;
  }
  // Already quit by the test. Don't call disconnect() then: ioredis arms a timer that only a later socket
  // 'close' clears, and that close already happened, so the timer would hold the process for 2 s.
  if (resource.status === 'end') return;
  // QUIT waits for the server; a dead or paused one would never answer, so bound it and then drop the socket.
  let timer: NodeJS.Timeout | undefined;
  const quitInTime = await Promise.race([
    resource.quit().then(
      () => true,
      () => false,
    ),
    new Promise<boolean>((resolve) => (timer = setTimeout(resolve, QUIT_BUDGET_MS, false))),
  ]);
  clearTimeout(timer);
  if (!quitInTime) resource.disconnect();
}

async function disposeAll(resources: Disposable[]): Promise<void> {
  // Last in, first out: clients go before the servers they were created for.
  const batch = resources.splice(0).reverse();
  const results = await Promise.allSettled(batch.map(dispose));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    const reason: unknown = failed.reason;
    throw reason instanceof Error ? reason : new Error(String(reason));
  }
}

/** Tracked inside a test (including its beforeEach): disposed after that test. */
const testScoped: Disposable[] = [];
/** Tracked in beforeAll / at collection time: disposed when the file is done. */
const fileScoped: Disposable[] = [];
let inTest = false;

// Root-level hooks: the root beforeEach runs before any nested beforeEach and the root afterEach after every
// nested afterEach, so test-scoped resources cover the whole test including its own hooks.
beforeEach(() => {
  inTest = true;
});
afterEach(async () => {
  inTest = false;
  await disposeAll(testScoped);
});
afterAll(async () => {
  await disposeAll(fileScoped);
});

/**
 * Disposes `resource` (stop() for handles, quit()/disconnect() for ioredis clients) after the current test, or
 * at the end of the file when called from beforeAll. A safety net: stopping explicitly is still fine (idempotent).
 */
export function trackForCleanup<T extends Disposable>(resource: T): T {
  (inTest ? testScoped : fileScoped).push(resource);
  return resource;
}

/**
 * Starts a private server in beforeAll and stops it in afterAll of the enclosing describe block.
 * Read `.server` inside tests/hooks only (it throws before beforeAll has run).
 */
export function usePrivateRedis(opts?: RedisServerOptions): { readonly server: RedisServerHandle } {
  let handle: RedisServerHandle | undefined;
  beforeAll(async () => {
    handle = trackForCleanup(await startRedisServer(opts));
  });
  afterAll(async () => {
    await handle?.stop();
    handle = undefined;
  });
  return {
    get server(): RedisServerHandle {
      if (!handle)
        throw new Error('usePrivateRedis(): the server is only available in tests and hooks, after beforeAll has run');
      return handle;
    },
  };
}
