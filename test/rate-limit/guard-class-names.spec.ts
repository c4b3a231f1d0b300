/**
 * RateLimitGuard's default counter is `<Class>.<handler>:<policy>` (generateKey). Two different classes of one name
 * (v1/users.controller.ts and v2/users.controller.ts both `UsersController`, two modules' `ItemsController`) shared
 * every counter: traffic to one used up the other's limit (nest-stack.hostile.spec.ts). Now each class of a shared
 * name is named with where it is declared and routed (module, path, version, host), and a class whose name is its own
 * keeps the plain name, so its counters (and a `block` / `reset` by that scope) are unchanged. Real Redis, Express and
 * Fastify.
 *
 * The names were listed once, at the first request: a module loaded later with LazyModuleLoader whose class has the
 * name of one already there kept the plain name and shared its counters. Nest routes no controller of a lazily loaded
 * module over HTTP, so such a class meets the guard the way resolvers and custom transports' handlers do, through
 * Nest's ExternalContextCreator (its guards, an ExecutionContext of its class): a route here loads the module and hands
 * the request to a provider of it.
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import {
  Controller,
  type ExecutionContext,
  Get,
  type INestApplication,
  Inject,
  Injectable,
  Module,
  Param,
  Req,
  Res,
  UseGuards,
  VersioningType,
} from '@nestjs/common';
import { ExternalContextCreator, LazyModuleLoader, ModuleRef, ModulesContainer } from '@nestjs/core';
import request from 'supertest';
import { RateLimitGuard, RateLimitService, Throttle } from '../../lib/index.js';
import { classNameOf } from '../../lib/rate-limit/rate-limit.class-names.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, type Platform } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const prefix = (): string => `rtk-names-${randomUUID().slice(0, 8)}:`;
/** Each test its own client: the counters of one test never meet another's. */
const byUser = (ctx: ExecutionContext): string =>
  String(ctx.switchToHttp().getRequest<{ headers: Record<string, string> }>().headers['x-user']);

function usersControllerOfVersion(version: string) {
  @Controller({ path: 'users', version })
  @UseGuards(RateLimitGuard)
  class UsersController {
    @Get()
    @Throttle({ limit: 2, ttl: 60_000, key: byUser })
    list() {
      return { version };
    }
  }
  return UsersController;
}

function itemsControllerAt(path: string) {
  @Controller(path)
  @UseGuards(RateLimitGuard)
  class ItemsController {
    @Get()
    @Throttle({ limit: 2, ttl: 60_000, key: byUser })
    list() {
      return { path };
    }
  }
  return ItemsController;
}

@Module({ controllers: [itemsControllerAt('shop-items')] })
class ShopModule {}

@Module({ controllers: [itemsControllerAt('admin-items')] })
class AdminModule {}

@Controller('plain')
@UseGuards(RateLimitGuard)
class PlainNamesController {
  @Get()
  @Throttle({ limit: 2, ttl: 60_000, key: byUser })
  list() {
    return { ok: true };
  }
}

/**
 * A class of handlers run with their guards by Nest's ExternalContextCreator, as @nestjs/graphql runs a resolver and a
 * custom transport its handlers (it finds providers, not controllers).
 */
function itemsHandlerOf(tag: string) {
  @Injectable()
  @UseGuards(RateLimitGuard)
  class ItemsHandler {
    @Throttle({ limit: 2, ttl: 60_000, key: byUser })
    list() {
      return { tag };
    }
  }
  return ItemsHandler;
}

const EagerItemsHandler = itemsHandlerOf('eager');
@Module({ providers: [EagerItemsHandler] })
class EagerHandlersModule {}
/** Modules loaded on demand, each with an ItemsHandler: the name of the eager one's, and of each other's. */
const LazyItemsHandler = itemsHandlerOf('lazy');
@Module({ providers: [LazyItemsHandler] })
class LazyItemsModule {}
const LazyItemsAHandler = itemsHandlerOf('lazy-a');
@Module({ providers: [LazyItemsAHandler] })
class LazyItemsAModule {}
const LazyItemsBHandler = itemsHandlerOf('lazy-b');
@Module({ providers: [LazyItemsBHandler] })
class LazyItemsBModule {}
const HANDLERS = {
  eager: [undefined, EagerItemsHandler],
  items: [LazyItemsModule, LazyItemsHandler],
  a: [LazyItemsAModule, LazyItemsAHandler],
  b: [LazyItemsBModule, LazyItemsBHandler],
} as const;

/** `GET /run/:name`: loads the handler's module if it is a lazy one (LazyModuleLoader), runs its `list` with its guards. */
@Controller('run')
class DispatchController {
  constructor(
    @Inject(ModuleRef) private readonly moduleRef: ModuleRef,
    @Inject(LazyModuleLoader) private readonly loader: LazyModuleLoader,
    @Inject(ExternalContextCreator) private readonly contexts: ExternalContextCreator,
  ) {}

  @Get(':name')
  async run(@Param('name') name: keyof typeof HANDLERS, @Req() req: unknown, @Res({ passthrough: true }) res: unknown) {
    const [module, cls] = HANDLERS[name];
    const ref = module === undefined ? this.moduleRef : await this.loader.load(() => module);
    const handler = ref.get<{ list(): unknown }>(cls, { strict: false });
    return this.contexts.create(handler, handler.list, 'list')(req, res);
  }
}

async function boot(platform: Platform, options: Parameters<typeof createToolkitApp>[0]) {
  const app = await createToolkitApp({ keyPrefix: prefix(), platform, http: true, ...options });
  return { app, http: request(app.app.getHttpServer() as Server) };
}

describe.each(PLATFORMS)('RateLimitGuard: controllers of one class name on %s', (platform) => {
  it('two versions served by two UsersController classes: a counter each (v1 used up, v2 still admits)', async () => {
    const { http } = await boot(platform, {
      controllers: [usersControllerOfVersion('1'), usersControllerOfVersion('2')],
      beforeInit: (a: INestApplication) => {
        a.enableVersioning({ type: VersioningType.URI });
      },
    });
    const user = randomUUID();
    const statuses: number[] = [];
    for (const path of ['/v1/users', '/v1/users', '/v2/users', '/v2/users', '/v1/users', '/v2/users']) {
      statuses.push((await http.get(path).set('x-user', user)).status);
    }
    // before: 200, 200, 429, 429, 429, 429 (one counter for both)
    expect(statuses).toEqual([200, 200, 200, 200, 429, 429]);
  });

  it('two ItemsController classes in two modules: a counter each', async () => {
    const { http } = await boot(platform, { imports: [ShopModule, AdminModule] });
    const user = randomUUID();
    const statuses: number[] = [];
    for (const path of ['/shop-items', '/shop-items', '/admin-items', '/shop-items', '/admin-items', '/admin-items']) {
      statuses.push((await http.get(path).set('x-user', user)).status);
    }
    expect(statuses).toEqual([200, 200, 200, 429, 200, 429]);
  });

  it('the scope of a class of a shared name names where it is routed; a class of its own name keeps its scope', async () => {
    const { app, http } = await boot(platform, {
      controllers: [usersControllerOfVersion('1'), usersControllerOfVersion('2'), PlainNamesController],
      beforeInit: (a: INestApplication) => {
        a.enableVersioning({ type: VersioningType.URI });
      },
    });
    const rateLimit = app.get(RateLimitService);
    const user = randomUUID();
    // blocked by hand under the scopes generateKey gives: the class of its own name as before this change
    await rateLimit.block(user, 60_000, { scope: 'PlainNamesController.list:default' });
    await rateLimit.block(user, 60_000, { scope: 'UsersController(RootTestModule users v:2).list:default' });
    const statuses = [];
    for (const path of ['/plain', '/v1/users', '/v2/users']) {
      statuses.push((await http.get(path).set('x-user', user)).status);
    }
    expect(statuses).toEqual([429, 200, 429]);
  });

  it('a module loaded later with LazyModuleLoader, a class of the name of an eager one: a counter each, the eager one keeps its name', async () => {
    const { app, http } = await boot(platform, { imports: [EagerHandlersModule], controllers: [DispatchController] });
    const user = randomUUID();
    const statuses: number[] = [];
    // the first request lists the app's classes; the lazy module is loaded after it
    for (const path of ['/run/eager', '/run/items', '/run/items', '/run/eager', '/run/items']) {
      statuses.push((await http.get(path).set('x-user', user)).status);
    }
    // before: 200, 200, 429, 429, 429 (the lazy class kept the plain name: the eager one's counter)
    expect(statuses).toEqual([200, 200, 200, 200, 429]);
    const modules = app.get(ModulesContainer);
    expect([classNameOf(modules, EagerItemsHandler), classNameOf(modules, LazyItemsHandler)]).toEqual([
      'ItemsHandler',
      'ItemsHandler(LazyItemsModule)',
    ]);
    // the class named before the load keeps its counters: a block by its plain scope applies to it alone
    const other = randomUUID();
    await app.get(RateLimitService).block(other, 60_000, { scope: 'ItemsHandler.list:default' });
    const blocked = [];
    for (const path of ['/run/eager', '/run/items']) blocked.push((await http.get(path).set('x-user', other)).status);
    expect(blocked).toEqual([429, 200]);
  });

  it('two modules loaded lazily, one after the other, with classes of one name: the later one gets a name of its own', async () => {
    const { app, http } = await boot(platform, { controllers: [DispatchController] });
    const user = randomUUID();
    const statuses: number[] = [];
    for (const path of ['/run/a', '/run/a', '/run/b', '/run/b', '/run/b', '/run/a']) {
      statuses.push((await http.get(path).set('x-user', user)).status);
    }
    // before: 200, 200, 429, 429, 429, 429 (b kept the plain name: a's counter)
    expect(statuses).toEqual([200, 200, 200, 200, 429, 429]);
    const modules = app.get(ModulesContainer);
    // a was alone of its name when it was named, and keeps that name
    expect([classNameOf(modules, LazyItemsAHandler), classNameOf(modules, LazyItemsBHandler)]).toEqual([
      'ItemsHandler',
      'ItemsHandler(LazyItemsBModule)',
    ]);
  });
});

describe('classNameOf: a module listed while it was still being built', () => {
  // LazyModuleLoader adds a module to the container before its providers: a listing in between saw the module (its
  // count) but not its classes. Nest's ModulesContainer with modules reduced to what classNameOf reads.
  const moduleOf = (name: string, classes: object[], isInstantiated: boolean) => ({
    name,
    token: name,
    isInstantiated,
    controllers: new Map(),
    providers: new Map(classes.map((cls) => [cls, { metatype: cls }])),
  });

  it('its classes are named when they reach the guard, after it was built', () => {
    const modules = new ModulesContainer();
    modules.set('EagerHandlersModule', moduleOf('EagerHandlersModule', [EagerItemsHandler], true) as never);
    const building = moduleOf('LazyItemsModule', [], false);
    modules.set('LazyItemsModule', building as never);
    expect(classNameOf(modules, EagerItemsHandler)).toBe('ItemsHandler');
    // its providers are added and it is built; the module count is the same
    building.providers.set(LazyItemsHandler, { metatype: LazyItemsHandler });
    building.isInstantiated = true;
    expect([classNameOf(modules, LazyItemsHandler), classNameOf(modules, EagerItemsHandler)]).toEqual([
      'ItemsHandler(LazyItemsModule)',
      'ItemsHandler',
    ]);
  });
});
