/**
 * Values JSON cannot write — a BigInt (a Prisma or pg `int8` user id, a config value parsed as BigInt) or an object
 * that refers to itself — where the rate limiter expects a string or a number: each is refused with the typed error
 * naming the field (InvalidKeyError, InvalidOptionsError), as any other wrong value is. The messages used to be built
 * with JSON.stringify, which threw a TypeError ("Do not know how to serialize a BigInt", "Converting circular
 * structure to JSON") in their place: a 500 saying nothing about the key or the option.
 */
import 'reflect-metadata';
import { type ArgumentsHost, Catch, Controller, type ExceptionFilter, Get, type Type, UseGuards } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import request from 'supertest';
import {
  InvalidKeyError,
  InvalidOptionsError,
  RateLimitGuard,
  RateLimitService,
  Throttle,
  type RateLimitOptions,
  type RateLimitPolicy,
} from '../../lib/index.js';
import { errorOf } from '../support/errors.js';
import { PLATFORMS, closeToolkitApps, createToolkitApp, type Platform } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const circular = (): Record<string, unknown> => {
  const o: Record<string, unknown> = { id: 7 };
  o.self = o;
  return o;
};

@Controller('odd')
@UseGuards(RateLimitGuard)
class OddKeyController {
  @Get('bigint')
  @Throttle({ limit: 5, ttl: 60_000, key: () => 42n as unknown as string })
  bigint(): string {
    return 'ok';
  }

  @Get('circular')
  @Throttle({ limit: 5, ttl: 60_000, key: () => circular() as unknown as string })
  circular(): string {
    return 'ok';
  }

  @Get('limit')
  @Throttle({ limit: () => 5n as unknown as number, ttl: 60_000 })
  limit(): string {
    return 'ok';
  }
}

/** Answers the toolkit's typed errors with their class and code (what the test reads of the error the guard threw). */
@Catch(InvalidKeyError, InvalidOptionsError)
class TypedErrorFilter implements ExceptionFilter {
  catch(err: InvalidKeyError | InvalidOptionsError, host: ArgumentsHost): void {
    const res = host.switchToHttp().getResponse<{
      status?: (code: number) => { send?: (b: unknown) => void; json?: (b: unknown) => void };
      code?: (code: number) => { send: (b: unknown) => void };
    }>();
    const body = { error: err.constructor.name, message: err.message };
    // Express: res.status(400).json(body); Fastify: reply.code(400).send(body)
    if (typeof res.code === 'function') res.code(400).send(body);
    else res.status?.(400).json?.(body);
  }
}

async function start(
  platform: Platform,
  controllers: Type<unknown>[] = [OddKeyController],
  rateLimit?: RateLimitOptions,
) {
  const app = await createToolkitApp({
    platform,
    http: true,
    keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
    controllers,
    providers: [{ provide: APP_FILTER, useClass: TypedErrorFilter }],
    ...(rateLimit && { rateLimit }),
  });
  return { http: app.app.getHttpServer() as Server, rl: app.get(RateLimitService) };
}

describe.each(PLATFORMS)('values JSON cannot write, through the guard on %s', (platform) => {
  it.each([
    ['bigint', 'InvalidKeyError', '42n'],
    ['circular', 'InvalidKeyError', 'object'],
    ['limit', 'InvalidOptionsError', '5n'],
  ])('a @Throttle %s value is the typed error, not a TypeError', async (route, error, shown) => {
    const { http } = await start(platform);
    const res = await request(http).get(`/odd/${route}`);
    expect({ status: res.status, error: res.body.error }).toEqual({ status: 400, error });
    expect(res.body.message).toContain(shown);
  });
});

describe('values JSON cannot write, at the service and at start', () => {
  const policy: RateLimitPolicy = { limit: 5, ttl: 60_000 };

  it('a policy field, reward points, block ms or a counter algorithm JSON cannot write: InvalidOptionsError', async () => {
    const { rl } = await start('express', []);
    const cases: [string, () => Promise<unknown>, string][] = [
      ['limit', () => rl.consume('k', { limit: 5n as unknown as number, ttl: 60_000 }), 'limit'],
      ['cost', () => rl.consume('k', { ...policy, cost: circular() as unknown as number }), 'cost'],
      ['peekAll', () => rl.peekAll([{ key: 'k', policy: { ...policy, ttl: 1n as unknown as number } }]), 'ttl'],
      ['reward', () => rl.reward('k', 2n as unknown as number, policy), 'points'],
      ['block', () => rl.block('k', Symbol('ms') as unknown as number, policy), 'Symbol(ms)'],
      ['algorithm', () => rl.reset('k', { scope: 's', algorithm: 1n as unknown as 'fixed-window' }), 'algorithm'],
    ];
    for (const [what, call, field] of cases) {
      const err = await errorOf(call);
      expect({ what, error: (err as Error)?.constructor.name }).toEqual({ what, error: 'InvalidOptionsError' });
      expect((err as Error).message).toContain(field);
    }
  });

  it('module options and @Throttle: InvalidOptionsError naming the option', async () => {
    const cases: [RateLimitOptions, string][] = [
      [{ trustProxy: 1n as unknown as number }, 'rateLimit.trustProxy'],
      [{ trustProxy: [1n as unknown as string] }, 'rateLimit.trustProxy[0]'],
      [{ allowList: [5n as unknown as string] }, 'rateLimit.allowList[0]'],
      [{ defaults: { limit: 5n as unknown as number, ttl: 60_000 } }, 'rateLimit.defaults.limit'],
    ];
    for (const [rateLimit, path] of cases) {
      const err = await errorOf(() => start('express', [], rateLimit));
      expect({ path, error: (err as Error)?.constructor.name }).toEqual({ path, error: 'InvalidOptionsError' });
      expect((err as Error).message).toContain(path);
    }
    const decorated = errorOf(() => Throttle({ limit: 10, ttl: 60_000, cost: circular() as unknown as number }));
    expect((await decorated)?.constructor.name).toBe('InvalidOptionsError');
  });
});
