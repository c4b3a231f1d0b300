/**
 * A migration from @nestjs/throttler left half done: handlers RateLimitGuard guards still carry throttler's @Throttle /
 * @SkipThrottle (imported from '@nestjs/throttler'). RateLimitGuard does not read them: the start fails
 * (InvalidOptionsError naming the handler, throttler's decorator and ours to write) unless throttler's ThrottlerGuard
 * runs there too (both guards side by side during a migration: nothing said). On Express and Fastify, with the guard
 * global (APP_GUARD, useGlobalGuards), on the controller, on the handler, and on GraphQL resolvers.
 */
import 'reflect-metadata';
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import { Controller, Get, Post, UseGuards } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { GraphQLModule, Query, Resolver } from '@nestjs/graphql';
import { MercuriusDriver, type MercuriusDriverConfig } from '@nestjs/mercurius';

import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as nestCommon from '@nestjs/common';
import * as nestCore from '@nestjs/core';
import request from 'supertest';
import { InvalidOptionsError, RateLimitGuard, SkipThrottle, Throttle } from '../../lib/index.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, type ToolkitAppOptions } from '../support/toolkit-app.js';

/**
 * @nestjs/throttler 6 is CommonJS that requires @nestjs/common, which Nest 12 ships as ESM only: Jest's module runtime
 * cannot require it before Node 24.9 (`Must use import to load ES Module`). Its own dist files are run here instead, as
 * they are, in this realm, with the @nestjs/common and @nestjs/core this test has (so its decorators write the real
 * metadata keys and its ThrottlerGuard and ThrottlerModule are Nest's to build); Node's builtins as Node has them.
 */
function loadThrottler(): typeof import('@nestjs/throttler') {
  const nodeRequire = createRequire(join(process.cwd(), 'package.json'));
  const dist = dirname(nodeRequire.resolve('@nestjs/throttler'));
  const loaded = new Map<string, { exports: object }>();
  const shared: Record<string, object> = { '@nestjs/common': nestCommon, '@nestjs/core': nestCore };
  const load = (file: string): object => {
    const cached = loaded.get(file);
    if (cached) return cached.exports;
    const module = { exports: {} as object };
    loaded.set(file, module);
    const own = (id: string): object => {
      if (id in shared) return shared[id];
      if (id.startsWith('./')) return load(join(dist, `${id.slice(2)}.js`));
      return nodeRequire(id) as object; // async_hooks, net, node:crypto
    };
    new Function('exports', 'require', 'module', readFileSync(file, 'utf8'))(module.exports, own, module);
    return module.exports;
  };
  return load(join(dist, 'index.js')) as typeof import('@nestjs/throttler');
}
const {
  SkipThrottle: ThrottlerSkipThrottle,
  Throttle: ThrottlerThrottle,
  ThrottlerGuard,
  ThrottlerModule,
} = loadThrottler();

@Controller('auth')
class HalfMigratedAuthController {
  @Post('login')
  @ThrottlerThrottle({ default: { limit: 3, ttl: 60_000 } })
  login(): string {
    return 'ok';
  }

  @Get('health')
  @ThrottlerSkipThrottle()
  health(): string {
    return 'ok';
  }

  @Get('plain')
  plain(): string {
    return 'plain';
  }
}

@Controller('short')
@ThrottlerThrottle({ short: { limit: 5, ttl: 1_000, blockDuration: 10_000 } })
@UseGuards(RateLimitGuard)
class ClassLevelController {
  @Get('a')
  a(): string {
    return 'a';
  }
}

@Controller('mixed')
class HandlerGuardController {
  @Get('guarded')
  @UseGuards(RateLimitGuard)
  @ThrottlerSkipThrottle({ long: true })
  guarded(): string {
    return 'guarded';
  }

  // throttler's decorator where RateLimitGuard does not run: not ours to judge
  @Get('unguarded')
  @ThrottlerThrottle({ default: { limit: 1, ttl: 1_000 } })
  unguarded(): string {
    return 'unguarded';
  }
}

@Controller('migrated')
class MigratedController {
  @Post('login')
  @Throttle({ limit: 3, ttl: 60_000 })
  login(): string {
    return 'ok';
  }

  @Get('health')
  @SkipThrottle()
  health(): string {
    return 'ok';
  }
}

class OwnRateLimitGuard extends RateLimitGuard {}
class OwnThrottlerGuard extends ThrottlerGuard {}

const globalGuard = { provide: APP_GUARD, useClass: RateLimitGuard };
const prefix = () => `rtk-peer-${randomUUID().slice(0, 8)}:`;

afterEach(() => closeToolkitApps());

describe.each(PLATFORMS)('@nestjs/throttler decorators under RateLimitGuard (%s)', (platform) => {
  const boot = (options: ToolkitAppOptions) => createToolkitApp({ platform, keyPrefix: prefix(), ...options });

  it('RateLimitGuard as APP_GUARD: throttler @Throttle and @SkipThrottle on handlers fail the start, each named', async () => {
    const started = boot({ controllers: [HalfMigratedAuthController], providers: [globalGuard] });
    await expect(started).rejects.toThrow(InvalidOptionsError);
    const err = (await started.catch((e: unknown) => e)) as InvalidOptionsError;
    expect(err.code).toBe('E_INVALID_OPTIONS');
    const lines = err.message.split('\n').slice(1);
    expect(lines).toEqual([
      "  - HalfMigratedAuthController.login (RateLimitGuard through APP_GUARD / useGlobalGuards): @Throttle({ default: { limit: 3, ttl: 60000 } }) from @nestjs/throttler; write @Throttle({ limit: 3, ttl: 60000 }) imported from 'nestjs-redis-toolkit'",
      "  - HalfMigratedAuthController.health (RateLimitGuard through APP_GUARD / useGlobalGuards): @SkipThrottle({ default: true }) from @nestjs/throttler; write @SkipThrottle() imported from 'nestjs-redis-toolkit'",
    ]);
    expect(err.message).toContain('RateLimitGuard does not read them');
  });

  it('app.useGlobalGuards(guard) and a RateLimitGuard subclass are RateLimitGuard too', async () => {
    const started = boot({
      controllers: [HalfMigratedAuthController],
      providers: [OwnRateLimitGuard],
      beforeInit: (app) => {
        app.useGlobalGuards(app.get(OwnRateLimitGuard));
      },
    });
    await expect(started).rejects.toThrow(/HalfMigratedAuthController\.login \(RateLimitGuard through APP_GUARD/);
  });

  it('@UseGuards on the class: the class-level throttler @Throttle is named with its handlers and every field', async () => {
    const started = boot({ controllers: [ClassLevelController] });
    await expect(started).rejects.toThrow(
      'ClassLevelController (on the class, for a) (RateLimitGuard through @UseGuards on the class): @Throttle({ short: { limit: 5, ttl: 1000, blockDuration: 10000 } }) from @nestjs/throttler; write @Throttle({ name: "short", limit: 5, ttl: 1000, blockDuration: 10000 }) imported from \'nestjs-redis-toolkit\'',
    );
  });

  it('@UseGuards on one handler: only that handler is named (an unguarded one with throttler decorators is not)', async () => {
    const started = boot({ controllers: [HandlerGuardController] });
    const err = (await started.catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect(err.message.split('\n').slice(1)).toEqual([
      "  - HandlerGuardController.guarded (RateLimitGuard through @UseGuards on the handler): @SkipThrottle({ long: true }) from @nestjs/throttler; write @SkipThrottle({ long: true }) imported from 'nestjs-redis-toolkit'",
    ]);
  });

  it('coexistence: ThrottlerGuard (or a subclass) runs there too: the app starts and nothing is said', async () => {
    for (const theirs of [ThrottlerGuard, OwnThrottlerGuard]) {
      const log = recordingLogger();
      const app = await boot({
        http: true,
        logger: log.logger,
        imports: [ThrottlerModule.forRoot([{ limit: 100, ttl: 60_000 }])],
        controllers: [HalfMigratedAuthController],
        providers: [globalGuard, { provide: APP_GUARD, useClass: theirs }],
      });
      const res = await request(app.app.getHttpServer()).get('/auth/plain');
      expect(res.status).toBe(200);
      expect([...log.warnings, ...log.errors].filter((l) => /throttler/i.test(l))).toEqual([]);
      await app.close();
    }
  });

  it("ThrottlerModule in the app but its guard not seen (it may run inside one of the app's guards): a warning, the app starts", async () => {
    const log = recordingLogger();
    const app = await boot({
      logger: log.logger,
      imports: [ThrottlerModule.forRoot([{ limit: 100, ttl: 60_000 }])],
      controllers: [HalfMigratedAuthController],
      providers: [globalGuard],
    });
    expect(app.app).toBeDefined();
    const warned = log.warnings.filter((l) => l.includes("@nestjs/throttler's decorators on handlers"));
    expect(warned).toHaveLength(1);
    expect(warned[0]).toContain(
      'HalfMigratedAuthController.login (RateLimitGuard through APP_GUARD / useGlobalGuards)',
    );
    expect(warned[0]).toContain('HalfMigratedAuthController.health');
    expect(warned[0]).toContain('a warning, not an error: THROTTLER:MODULE_OPTIONS is provided');
  });

  it('the reverse (our decorators under ThrottlerGuard alone) is not ours to judge: the app starts', async () => {
    const app = await boot({
      imports: [ThrottlerModule.forRoot([{ limit: 100, ttl: 60_000 }])],
      controllers: [MigratedController],
      providers: [{ provide: APP_GUARD, useClass: ThrottlerGuard }],
    });
    expect(app.app).toBeDefined();
  });

  it('a peer-free app (our decorators under RateLimitGuard) starts and limits', async () => {
    const app = await boot({ http: true, controllers: [MigratedController], providers: [globalGuard] });
    const server = app.app.getHttpServer();
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await request(server).post('/migrated/login')).status);
    expect(statuses).toEqual([201, 201, 201, 429]);
  });
});

@Resolver()
class HalfMigratedResolver {
  @Query(() => String)
  @ThrottlerThrottle({ default: { limit: 2, ttl: 60_000 } })
  hello(): string {
    return 'world';
  }
}

describe.each([
  ['express', 'Apollo'],
  ['fastify', 'Mercurius'],
] as const)('throttler decorators on GraphQL resolvers under RateLimitGuard (%s, %s)', (platform, _driver) => {
  it('a resolver with throttler @Throttle under APP_GUARD RateLimitGuard fails the start', async () => {
    const graphql =
      platform === 'express'
        ? GraphQLModule.forRoot<ApolloDriverConfig>({ driver: ApolloDriver, autoSchemaFile: true })
        : GraphQLModule.forRoot<MercuriusDriverConfig>({ driver: MercuriusDriver, autoSchemaFile: true });
    const started = createToolkitApp({
      platform,
      keyPrefix: prefix(),
      imports: [graphql],
      providers: [HalfMigratedResolver, globalGuard],
    });
    await expect(started).rejects.toThrow(
      'HalfMigratedResolver.hello (RateLimitGuard through APP_GUARD / useGlobalGuards): @Throttle({ default: { limit: 2, ttl: 60000 } }) from @nestjs/throttler; write @Throttle({ limit: 2, ttl: 60000 })',
    );
  });
});
