/**
 * Boots a toolkit app for a test that is not about the boot itself, retrying a boot whose startup check timed out. The toolkit fails fast at
 * start when Redis does not answer within commandTimeout; on a busy 2-core machine a healthy server can miss a short
 * commandTimeout once. That is the test's own setup, not the fault under test, so such a boot is retried (at most 3
 * attempts); any other error, or a third timeout, is thrown.
 */
import { RedisUnavailableError } from '../../lib/index.js';
import { usePrivateRedis } from './private-servers.js';
import type { RedisServerHandle } from './redis-server.js';
import { closeToolkitApps, createToolkitApp, type ToolkitApp, type ToolkitAppOptions } from './toolkit-app.js';

export async function bootToolkitApp(options: ToolkitAppOptions): Promise<ToolkitApp> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await createToolkitApp(options);
    } catch (err) {
      const timedOut = err instanceof RedisUnavailableError && /timed out/i.test(err.message);
      if (!timedOut || attempt >= 3) throw err;
    }
  }
}

/**
 * A private server for the tests of a describe (or file) that kill it: after each test the toolkit apps are closed and
 * the server restarted if the test stopped it, so the next test starts on a running one. Read `.server` inside tests
 * and hooks only (usePrivateRedis).
 */
export function useKillableRedis(): { readonly server: RedisServerHandle } {
  const redis = usePrivateRedis();
  afterEach(async () => {
    await closeToolkitApps();
    if (!redis.server.isRunning()) await redis.server.restart();
  });
  return redis;
}
