/**
 * RateLimitGuard's default counter is `<Class>.<handler>:<policy>` (generateKey). Two different classes of one name
 * (v1/users.controller.ts and v2/users.controller.ts both `UsersController`, two modules' `ItemsController`) shared
 * every counter: traffic to one used up the other's limit (nest-stack.hostile.spec.ts). Now each class of a shared
 * name is named with where it is declared and routed (module, path, version, host), and a class whose name is its own
 * keeps the plain name, so its counters (and a `block` / `reset` by that scope) are unchanged. Real Redis, Express and
 * Fastify.
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import {
  Controller,
  type ExecutionContext,
  Get,
  type INestApplication,
  Module,
  UseGuards,
  VersioningType,
} from '@nestjs/common';
import request from 'supertest';
import { RateLimitGuard, RateLimitService, Throttle } from '../../lib/index.js';
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
});
