// Boots the gateway fixture (gateway.module.ts) on a private redis-server and prints `listening <url>`: the test then
// connects its own Socket.IO client (not bundled) to /notifications. Closing stdin stops the app and its redis-server.
import 'reflect-metadata';
import { startRedisServer } from 'nestjs-redis-toolkit/testing';
import { GatewayModule } from './gateway.module.js';
import { createApp } from './platform.js';

async function main(): Promise<void> {
  const redis = await startRedisServer();
  process.env.REDIS_URL = redis.url;
  const app = await createApp(GatewayModule);
  await app.listen(0, '127.0.0.1');
  process.stdout.write(`listening ${(await app.getUrl()).replace('[::1]', '127.0.0.1')}\n`);
  // stdin ends when the test is done or gone: a crashed test leaves no app nor redis-server behind
  process.stdin.resume();
  await new Promise((resolve) => process.stdin.once('end', resolve).once('close', resolve));
  await app.close();
  await redis.stop();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stdout.write(`the app did not boot: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
