import { startRedisServer } from '../../test/support/redis-server.js';

/** The Redis a benchmark runs against: BENCH_REDIS_URL (set by `npm run bench` for every feature) or a private one. */
export async function benchRedis(): Promise<{ url: string; stop(): Promise<void> }> {
  const shared = process.env.BENCH_REDIS_URL;
  if (shared) return { url: shared, stop: async () => undefined };
  const server = await startRedisServer();
  return { url: server.url, stop: () => server.stop() };
}
