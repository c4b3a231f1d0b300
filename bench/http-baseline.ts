/**
 * The HTTP benchmark's baseline: a plain NestJS app (Express, no toolkit, no Redis) whose `GET /products` returns
 * the very JSON the sample app returns (http.bench.ts fetches it from the sample and hands it over in a file), so the
 * difference between the two is what the toolkit adds on a cache hit (guard, interceptor, Redis round trip).
 *
 * Run as a child process: PORT, HOST (default 127.0.0.1), BASELINE_BODY_FILE.
 */
import 'reflect-metadata';
import { Controller, Get, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { readFileSync } from 'node:fs';

const bodyFile = process.env.BASELINE_BODY_FILE;
if (!bodyFile) throw new Error('BASELINE_BODY_FILE is required');
const products: unknown = JSON.parse(readFileSync(bodyFile, 'utf8'));

@Controller('products')
class ProductsController {
  @Get()
  list(): unknown {
    return products;
  }
}

@Module({ controllers: [ProductsController] })
class BaselineModule {}

async function bootstrap(): Promise<void> {
  const app = await NestFactory.create(BaselineModule, { logger: ['error', 'warn'] });
  app.enableShutdownHooks();
  await app.listen(Number(process.env.PORT ?? 3001), process.env.HOST ?? '127.0.0.1');
}

bootstrap().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
