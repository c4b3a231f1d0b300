import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { createSampleApp, samplePlatform } from './bootstrap.js';
import { startPrivateRedis } from './private-redis.js';

async function bootstrap(): Promise<void> {
  const logger = new Logger('Sample');
  const platform = samplePlatform();
  if (!process.env.REDIS_URL) {
    const redis = await startPrivateRedis();
    process.env.REDIS_URL = redis.url;
    logger.log(`REDIS_URL is not set: started a private redis-server at ${redis.url} (stopped on exit)`);
  }
  const app = await createSampleApp(platform);
  app.enableShutdownHooks();
  const port = Number(process.env.PORT ?? 3000);
  await app.listen(port, process.env.HOST ?? '127.0.0.1');
  logger.log(`Sample app on http://127.0.0.1:${port} with ${platform} (GET /health, GET /products, page at /)`);
}

bootstrap().catch((err: unknown) => {
  new Logger('Sample').error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
