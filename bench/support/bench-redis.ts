import { startRedisServer } from '../../test/support/redis-server.js';
import { unwatchRedisCpu, watchRedisCpu } from './measure.js';

/**
 * The Redis a benchmark runs against: BENCH_REDIS_URL (set by `npm run bench` for every feature) or a private one.
 * Its CPU is read around every measured round (Redis CPU per operation, see watchRedisCpu).
 */
export async function benchRedis(): Promise<{ url: string; stop(): Promise<void> }> {
  const shared = process.env.BENCH_REDIS_URL;
  if (shared) {
    watchRedisCpu(shared);
    return { url: shared, stop: async () => unwatchRedisCpu(shared) };
  }
  const server = await startRedisServer();
  watchRedisCpu(server.url);
  return {
    url: server.url,
    stop: async () => {
      unwatchRedisCpu(server.url);
      await server.stop();
    },
  };
}
