/**
 * A migration from @nestjs/cache-manager left half done: routes HttpCacheInterceptor intercepts still carry
 * cache-manager's @CacheKey / @CacheTTL (imported from '@nestjs/cache-manager'). HttpCacheInterceptor does not read
 * them (the route was cached under its URL for cache.defaultTtl): the start fails (InvalidOptionsError naming the
 * route, cache-manager's decorators and ours to write) unless cache-manager's CacheInterceptor runs there too (both
 * side by side during a migration: nothing said). On Express and Fastify; the interceptor global (APP_INTERCEPTOR,
 * useGlobalInterceptors), on the controller, on the handler.
 */
import 'reflect-metadata';
import { CacheInterceptor, CacheKey as CmCacheKey, CacheModule, CacheTTL as CmCacheTTL } from '@nestjs/cache-manager';
import { Controller, Get, UseInterceptors } from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { CacheTTL, HttpCacheInterceptor } from '../../lib/advanced.js';
import { InvalidOptionsError } from '../../lib/index.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, type ToolkitAppOptions } from '../support/toolkit-app.js';

@Controller('products')
@UseInterceptors(HttpCacheInterceptor)
class HalfMigratedProductsController {
  @Get()
  @CmCacheTTL(5_000)
  list(): { items: string[] } {
    return { items: ['tea'] };
  }

  @Get('featured')
  @CmCacheKey('featured-products')
  @CmCacheTTL(60_000)
  featured(): { items: string[] } {
    return { items: ['cake'] };
  }

  @Get('plain')
  plain(): { items: string[] } {
    return { items: [] };
  }
}

@Controller('news')
@CmCacheTTL(2_000)
class ClassTtlController {
  @Get()
  latest(): string[] {
    return ['a'];
  }
}

@Controller('mixed')
class HandlerInterceptorController {
  @Get('ours')
  @UseInterceptors(HttpCacheInterceptor)
  @CmCacheTTL(1_000)
  ours(): string[] {
    return ['ours'];
  }

  // cache-manager's decorator where HttpCacheInterceptor does not run: not ours to judge
  @Get('bare')
  @CmCacheTTL(1_000)
  bare(): string[] {
    return ['bare'];
  }
}

@Controller('both')
@UseInterceptors(CacheInterceptor, HttpCacheInterceptor)
class CoexistingController {
  @Get()
  @CmCacheTTL(5_000)
  list(): string[] {
    return ['both'];
  }
}

@Controller('migrated')
@UseInterceptors(HttpCacheInterceptor)
class MigratedController {
  @Get()
  @CacheTTL(5_000)
  list(): string[] {
    return ['migrated'];
  }
}

@Controller('theirs')
@UseInterceptors(CacheInterceptor)
class TheirsOnlyController {
  @Get()
  @CacheTTL(5_000)
  list(): string[] {
    return ['theirs'];
  }
}

const prefix = () => `rtk-cpeer-${randomUUID().slice(0, 8)}:`;

afterEach(() => closeToolkitApps());

describe.each(PLATFORMS)('@nestjs/cache-manager decorators under HttpCacheInterceptor (%s)', (platform) => {
  const boot = (options: ToolkitAppOptions) => createToolkitApp({ platform, keyPrefix: prefix(), ...options });

  it('@UseInterceptors on the class: cache-manager @CacheKey / @CacheTTL on routes fail the start, each named', async () => {
    const started = boot({ controllers: [HalfMigratedProductsController] });
    const err = (await started.catch((e: unknown) => e)) as InvalidOptionsError;
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect(err.code).toBe('E_INVALID_OPTIONS');
    expect(err.message).toContain('HttpCacheInterceptor does not read them');
    const ours =
      "imported from 'nestjs-redis-toolkit/advanced' (a @CacheKey function takes (request, context) here, a @CacheTTL function (context, body))";
    expect(err.message.split('\n').slice(1)).toEqual([
      `  - HalfMigratedProductsController.list (HttpCacheInterceptor through @UseInterceptors on the class): @CacheTTL(5000) from @nestjs/cache-manager; write @CacheTTL(5000) ${ours}`,
      `  - HalfMigratedProductsController.featured (HttpCacheInterceptor through @UseInterceptors on the class): @CacheKey("featured-products") @CacheTTL(60000) from @nestjs/cache-manager; write @CacheKey("featured-products") @CacheTTL(60000) ${ours}`,
    ]);
  });

  it('APP_INTERCEPTOR: a class-level cache-manager @CacheTTL is named with its routes', async () => {
    const started = boot({
      controllers: [ClassTtlController],
      providers: [{ provide: APP_INTERCEPTOR, useClass: HttpCacheInterceptor }],
    });
    await expect(started).rejects.toThrow(
      'ClassTtlController (on the class, for latest) (HttpCacheInterceptor through APP_INTERCEPTOR / useGlobalInterceptors): @CacheTTL(2000) from @nestjs/cache-manager; write @CacheTTL(2000)',
    );
  });

  it('app.useGlobalInterceptors(interceptor) counts as global', async () => {
    const started = boot({
      controllers: [ClassTtlController],
      providers: [HttpCacheInterceptor],
      beforeInit: (app) => {
        app.useGlobalInterceptors(app.get(HttpCacheInterceptor));
      },
    });
    await expect(started).rejects.toThrow(/ClassTtlController \(on the class, for latest\)/);
  });

  it('@UseInterceptors on one handler: only that route is named', async () => {
    const err = (await boot({ controllers: [HandlerInterceptorController] }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect(err.message.split('\n').slice(1)).toHaveLength(1);
    expect(err.message).toContain(
      'HandlerInterceptorController.ours (HttpCacheInterceptor through @UseInterceptors on the handler): @CacheTTL(1000)',
    );
  });

  it("coexistence: cache-manager's CacheInterceptor runs there too: the app starts and nothing is said", async () => {
    const log = recordingLogger();
    const app = await boot({
      http: true,
      logger: log.logger,
      imports: [CacheModule.register()],
      controllers: [CoexistingController],
    });
    const res = await request(app.app.getHttpServer()).get('/both');
    expect(res.status).toBe(200);
    expect(res.body).toEqual(['both']);
    expect([...log.warnings, ...log.errors].filter((l) => /cache-manager/i.test(l))).toEqual([]);
  });

  it("CacheModule in the app but its interceptor not seen (it may run inside one of the app's): a warning, the app starts", async () => {
    const log = recordingLogger();
    const app = await boot({
      logger: log.logger,
      imports: [CacheModule.register()],
      controllers: [HalfMigratedProductsController],
    });
    expect(app.app).toBeDefined();
    const warned = log.warnings.filter((l) => l.includes("@nestjs/cache-manager's decorators on handlers"));
    expect(warned).toHaveLength(1);
    expect(warned[0]).toContain('HalfMigratedProductsController.list (HttpCacheInterceptor through @UseInterceptors');
    expect(warned[0]).toContain('HalfMigratedProductsController.featured');
    expect(warned[0]).toContain('a warning, not an error: CACHE_MANAGER is provided');
  });

  it('the reverse (our @CacheTTL under CacheInterceptor alone) is not ours to judge: the app starts', async () => {
    const app = await boot({ imports: [CacheModule.register()], controllers: [TheirsOnlyController] });
    expect(app.app).toBeDefined();
  });

  it('a peer-free app (our decorators under HttpCacheInterceptor) starts and caches', async () => {
    const app = await boot({ http: true, controllers: [MigratedController] });
    const server = app.app.getHttpServer();
    expect((await request(server).get('/migrated')).headers['x-cache']).toBe('MISS');
    expect((await request(server).get('/migrated')).headers['x-cache']).toBe('HIT');
  });
});
