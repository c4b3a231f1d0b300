// Data with `__proto__` and `constructor` keys through the toolkit's serializers (run.mjs, RTK_PACKAGE_NODE_FLAGS):
// under --disable-proto=throw or =delete (Object.prototype.__proto__ throws or is gone) a session's data, a cached
// value and a pub/sub payload parsed from such JSON must round-trip as own fields, as on a Node without the flag,
// and leave Object.prototype untouched. Prints `ok - ...` lines as main.ts does.
import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { CacheService, PubSubService, RedisToolkitModule, SessionService } from 'nestjs-redis-toolkit';
import { startRedisServer } from 'nestjs-redis-toolkit/testing';
import { check, runChecks } from './checks.js';

const HOSTILE = '{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}},"a":1}';

/** The own fields of `value` with their JSON, and whether its prototype is still Object.prototype. */
function shape(value: unknown): unknown {
  const object = value as Record<string, unknown>;
  const fields = Object.getOwnPropertyNames(object)
    .sort()
    .map((name) => [name, JSON.stringify(Object.getOwnPropertyDescriptor(object, name)?.value)]);
  return { fields, plain: Object.getPrototypeOf(object) === Object.prototype };
}

async function main(): Promise<void> {
  const redis = await startRedisServer();
  @Module({
    imports: [
      RedisToolkitModule.forRoot({
        connection: { url: redis.url },
        keyPrefix: 'hostile:',
        session: { cookie: { secret: 'fixture-secret', secure: false } },
      }),
    ],
  })
  class HostileModule {}
  const app = await NestFactory.createApplicationContext(HostileModule, { logger: ['error'] });
  try {
    const expected = JSON.stringify(shape(JSON.parse(HOSTILE)));
    const sessions = app.get(SessionService);
    const created = await sessions.create('mallory', JSON.parse(HOSTILE));
    await sessions.update(created.id, JSON.parse('{"__proto__":{"polluted":2},"b":2}'));
    const data = (await sessions.get(created.id))?.data;
    const own = data ? Object.getOwnPropertyNames(data).sort().join() : 'no session';
    check(
      'session data with __proto__ and constructor keys: own fields after create, update and read',
      own === '__proto__,a,b,constructor' &&
        JSON.stringify(Object.getOwnPropertyDescriptor(data, '__proto__')?.value) === '{"polluted":2}',
      shape(data),
    );

    const cache = app.get(CacheService);
    await cache.set('hostile', JSON.parse(HOSTILE));
    const cached = await cache.get('hostile');
    check(
      'cache value with __proto__ and constructor keys: the same own fields',
      JSON.stringify(shape(cached)) === expected,
      shape(cached),
    );

    const pubsub = app.get(PubSubService);
    const received: unknown[] = [];
    await pubsub.subscribe('hostile', (payload) => {
      received.push(payload);
    });
    await pubsub.publish('hostile', JSON.parse(HOSTILE));
    for (let i = 0; i < 100 && received.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    check(
      'pub/sub payload with __proto__ and constructor keys: the same own fields',
      received.length === 1 && JSON.stringify(shape(received[0])) === expected,
      received.map(shape),
    );
    check(
      'Object.prototype untouched',
      !('polluted' in {}) && Object.getOwnPropertyNames(Object.prototype).every((n) => n !== 'polluted'),
      Object.getOwnPropertyNames(Object.prototype),
    );
  } finally {
    await app.close();
    await redis.stop();
  }
}

runChecks(main);
