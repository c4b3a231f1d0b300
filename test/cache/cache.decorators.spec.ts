import 'reflect-metadata';
import { Body, Controller, Get, Injectable, Param, Put } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import request from 'supertest';
import {
  Cacheable,
  CacheEvict,
  CachePut,
  CacheService,
  InvalidOptionsError,
  SerializationError,
} from '../../lib/index.js';
import { KeyBuilder, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { othersConnected } from '../support/clients.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisServer } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

interface Product {
  id: string;
  name: string;
  category: string;
}

@Injectable()
class ProductsRepository {
  calls = { find: 0, list: 0, named: 0 };
  readonly rows = new Map<string, Product>([
    ['1', { id: '1', name: 'Tea', category: 'drinks' }],
    ['2', { id: '2', name: 'Cake', category: 'food' }],
  ]);

  @Cacheable({
    ttl: 60_000,
    tags: (id: string) => ['products', `product:${id}`],
    resultTags: (p: Product) => [`category:${p.category}`],
  })
  async find(id: string): Promise<Product> {
    this.calls.find++;
    return { ...this.rows.get(id)! };
  }

  @Cacheable({ key: (category: string) => `list:${category}`, tags: ['products'] })
  list(category: string): Product[] {
    this.calls.list++;
    return [...this.rows.values()].filter((p) => p.category === category);
  }

  @Cacheable({ key: 'named', ttl: 60_000 })
  async named(): Promise<string> {
    this.calls.named++;
    return 'n';
  }

  @CacheEvict({ tags: (id: string) => [`product:${id}`], keys: (_id: string, p: Product) => [`list:${p.category}`] })
  async update(id: string, patch: Product): Promise<Product> {
    this.rows.set(id, patch);
    return patch;
  }

  @CacheEvict({ tags: ['products'] })
  async failingUpdate(): Promise<void> {
    throw new Error('write failed');
  }

  @CachePut({ key: (id: string) => `put:${id}` })
  async put(id: string): Promise<string> {
    return `value-${id}-${Date.now()}`;
  }
}

@Controller('products')
class ProductsController {
  calls = 0;

  constructor(private readonly repo: ProductsRepository) {}

  @Get(':id')
  @Cacheable({ key: (id: string) => `http:product:${id}`, tags: ['products'] })
  async get(@Param('id') id: string): Promise<Product & { served: number }> {
    this.calls++;
    return { ...(await this.repo.find(id)), served: this.calls };
  }

  @Put(':id')
  @CacheEvict({ tags: ['products'] })
  async update(@Param('id') id: string, @Body() body: Product): Promise<Product> {
    return this.repo.update(id, body);
  }
}

@Injectable()
class LookupService {
  loads = 0;

  @Cacheable({ ttl: 60_000 })
  async find(_arg: unknown): Promise<number> {
    return ++this.loads;
  }
}

/** Durations getOrSet and set accept (a fraction of a ms is rounded up), as decorator options. */
@Injectable()
class FineDurations {
  runs = 0;

  @Cacheable({ key: 'half', ttl: 0.5, staleTtl: 60_000 })
  async half(): Promise<number> {
    return ++this.runs;
  }

  @Cacheable({ key: 'fraction', ttl: 90_000.5, staleTtl: 0.5, grace: 0.5, graceBackoff: 0.5 })
  async fraction(): Promise<number> {
    return ++this.runs;
  }

  @CachePut({ key: 'put-half', ttl: 0.5, staleTtl: 60_000 })
  async putHalf(): Promise<number> {
    return ++this.runs;
  }
}

/** Two classes of one name, as `UsersService` in two feature modules (issue 17 item 5). */
function usersServiceFor(tenant: string) {
  @Injectable()
  class UsersService {
    @Cacheable()
    async find(id: string): Promise<string> {
      return `${tenant}:${id}`;
    }
  }
  return UsersService;
}

describe.each(['single', 'cluster'] as const)('cache decorators on %s', (target) => {
  const keyPrefix = () => `rtk-d${randomBytes(4).toString('hex')}:`;

  class HumanPrincipal {
    constructor(readonly id: string) {}
  }
  class ServicePrincipal {
    constructor(readonly id: string) {}
  }

  it('default keys render Map, Set, URL, binary and class-instance arguments exactly, and refuse stateless class instances', async () => {
    const app = await createToolkitApp({ target, keyPrefix: keyPrefix(), providers: [LookupService] });
    const svc = app.get(LookupService);
    // each pair differs: before, each rendered as `{}` and the second call got the first one's entry
    const distinct: [unknown, unknown][] = [
      [new URL('https://a.example/x'), new URL('https://b.example/y')],
      [new Map([['k', 1]]), new Map([['k', 2]])],
      [new Set([1, 2]), new Set([1, 3])],
      [new URLSearchParams('a=1'), new URLSearchParams('a=2')],
      [/a/g, /b/g],
      [Buffer.from('a'), Buffer.from('b')],
      [new Uint8Array([1]), new Uint8Array([2])],
      [new Map([['k', 1]]), { k: 1 }],
      // objects of two classes with the same fields (a user and a service account asking for their permissions), and
      // one of a class and a plain object: rendered by their fields alone they shared one entry
      [new HumanPrincipal('7'), new ServicePrincipal('7')],
      [new HumanPrincipal('8'), { id: '8' }],
    ];
    for (const [a, b] of distinct) {
      const first = await svc.find(a);
      const loadsBefore = svc.loads;
      // b is loaded, not served a's entry
      expect([a, await svc.find(b)]).toEqual([a, loadsBefore + 1]);
      expect(await svc.find(a)).toBe(first);
    }
    // the same contents (Map and Set in another insertion order) share one entry
    const loads = svc.loads;
    expect(await svc.find(new URL('https://a.example/x'))).toBe(1);
    await svc.find(
      new Map([
        ['b', 2],
        ['a', 1],
      ]),
    );
    await svc.find(
      new Map([
        ['a', 1],
        ['b', 2],
      ]),
    );
    await svc.find(new Set(['y', 'x']));
    await svc.find(new Set(['x', 'y']));
    expect(svc.loads).toBe(loads + 2);
    // no stable rendering: a typed error, never a shared `{}`
    for (const bad of [new WeakMap(), Promise.resolve(1), new Error('x')]) {
      await expect(svc.find(bad)).rejects.toBeInstanceOf(SerializationError);
    }
  });

  it('refuses at bootstrap two different classes of one name that use default keys', async () => {
    const [TenantA, TenantB] = [usersServiceFor('a'), usersServiceFor('b')];
    expect(TenantA.name).toBe(TenantB.name);
    await expect(createToolkitApp({ target, keyPrefix: keyPrefix(), providers: [TenantA, TenantB] })).rejects.toThrow(
      /two different classes named UsersService both use the default key "UsersService\.find:<hash of the arguments>".*explicit key/s,
    );
    // the refused start closed the toolkit's connections (Nest calls no shutdown hook after a failed init: left open,
    // they kept retrying and the process alive)
    const server = trackForCleanup(await startRedisServer());
    await expect(createToolkitApp({ target: { url: server.url }, providers: [TenantA, TenantB] })).rejects.toThrow(
      InvalidOptionsError,
    );
    expect(await waitFor(async () => (await othersConnected(server.port)) === 0, 5_000)).toBe(true);
    // one class provided twice (two instances) shares its entries rightly: no error
    const app = await createToolkitApp({
      target,
      keyPrefix: keyPrefix(),
      providers: [TenantA, { provide: 'second', useClass: TenantA }],
    });
    expect(await app.get(TenantA).find('1')).toBe('a:1');
  });

  it('@Cacheable on a service: default key ClassName.method: + argument hash, tags from arguments and result', async () => {
    const prefix = keyPrefix();
    const app = await createToolkitApp({ target, keyPrefix: prefix, providers: [ProductsRepository] });
    const repo = app.get(ProductsRepository);
    const client = app.get(RedisConnection).client as RedisClient;
    expect(await repo.find('1')).toEqual({ id: '1', name: 'Tea', category: 'drinks' });
    expect(await repo.find('1')).toEqual({ id: '1', name: 'Tea', category: 'drinks' });
    expect(await repo.find('2')).toMatchObject({ id: '2' });
    expect(repo.calls.find).toBe(2);
    const keys = new KeyBuilder(prefix);
    const key = keys.key('cache', `ProductsRepository.find:${KeyBuilder.hash('["1"]')}`);
    expect(key).toBe(`${prefix}cache:ProductsRepository.find%3A${KeyBuilder.hash('["1"]')}`);
    expect(await client.exists(key)).toBe(1);
    expect(await client.zscore(keys.tagged('cache', 'category:drinks', ':tag'), key)).not.toBeNull();

    // A synchronous method becomes async, its key comes from the function.
    expect(await repo.list('food')).toHaveLength(1);
    expect(await repo.list('food')).toHaveLength(1);
    expect(repo.calls.list).toBe(1);
    expect(await repo.named()).toBe('n');
    expect(await repo.named()).toBe('n');
    expect(repo.calls.named).toBe(1);

    // @CacheEvict runs after the method: its tags and keys come from the arguments.
    await repo.update('1', { id: '1', name: 'Green tea', category: 'food' });
    expect(await repo.find('1')).toMatchObject({ name: 'Green tea' });
    expect(repo.calls.find).toBe(3);
    expect(await repo.list('food')).toHaveLength(2);
    expect(repo.calls.list).toBe(2);
    await app.get(CacheService).invalidateTags('category:food');
    await repo.find('2');
    expect(repo.calls.find).toBe(4);
  });

  it('@CacheEvict does nothing when the method throws; @CachePut always runs and stores', async () => {
    const app = await createToolkitApp({ target, keyPrefix: keyPrefix(), providers: [ProductsRepository] });
    const repo = app.get(ProductsRepository);
    const cache = app.get(CacheService);
    await repo.find('1');
    await expect(repo.failingUpdate()).rejects.toThrow('write failed');
    await repo.find('1');
    expect(repo.calls.find).toBe(1);
    const first = await repo.put('9');
    expect(await cache.get('put:9')).toBe(first);
    await new Promise((r) => setTimeout(r, 5));
    const second = await repo.put('9');
    expect(second).not.toBe(first);
    expect(await cache.get('put:9')).toBe(second);
  });

  it.each(PLATFORMS)('@Cacheable and @CacheEvict on a controller, on %s', async (platform) => {
    const app = await createToolkitApp({
      target,
      platform,
      keyPrefix: keyPrefix(),
      http: true,
      providers: [ProductsRepository],
      controllers: [ProductsController],
    });
    const server = app.app.getHttpServer();
    const first = await request(server).get('/products/1').expect(200);
    const second = await request(server).get('/products/1').expect(200);
    expect(first.body).toEqual(second.body);
    expect(app.get(ProductsController).calls).toBe(1);
    await request(server).put('/products/1').send({ id: '1', name: 'Black tea', category: 'drinks' }).expect(200);
    const third = await request(server).get('/products/1').expect(200);
    expect(third.body).toMatchObject({ name: 'Black tea', served: 2 });
  });
});

describe('cache decorator durations', () => {
  /** Declares a class with `decorator` on a method: throws when the decorator refuses its options. */
  const declare = (decorator: MethodDecorator) => () => {
    class Declared {
      async method(): Promise<number> {
        return 1;
      }
    }
    const descriptor = Object.getOwnPropertyDescriptor(Declared.prototype, 'method')!;
    Object.defineProperty(
      Declared.prototype,
      'method',
      decorator(Declared.prototype, 'method', descriptor) ?? descriptor,
    );
  };

  it('a duration getOrSet would refuse is refused at declaration, with the message getOrSet gives', () => {
    const refused: [MethodDecorator, RegExp][] = [
      [Cacheable({ ttl: 1e17 }), /@Cacheable on Declared\.method: ttl must be at most 3153600000000 ms/],
      [Cacheable({ staleTtl: 5e15 }), /@Cacheable on Declared\.method: staleTtl must be at most 3153600000000 ms/],
      [Cacheable({ grace: 1e16 }), /grace must be at most/],
      [Cacheable({ graceBackoff: 0 }), /graceBackoff must be a positive number of milliseconds, got 0/],
      [Cacheable({ ttl: 0 }), /ttl must be a positive number of milliseconds, got 0/],
      [Cacheable({ ttl: Number.NaN }), /ttl must be a positive number/],
      [Cacheable({ staleTtl: -1 }), /staleTtl must be a non-negative number/],
      [Cacheable({ shouldCache: true as never }), /shouldCache must be a function/],
      [CachePut({ ttl: 1e17 }), /@CachePut on Declared\.method: ttl must be at most 3153600000000 ms/],
      [CachePut({ staleTtl: 5e15 }), /@CachePut on Declared\.method: staleTtl must be at most/],
    ];
    for (const [decorator, message] of refused) {
      expect(declare(decorator)).toThrow(InvalidOptionsError);
      expect(declare(decorator)).toThrow(message);
    }
    // what getOrSet accepts is accepted: a fraction of a ms, 100 years, 0 where getOrSet takes 0, a ttl function
    for (const decorator of [
      Cacheable({ ttl: 0.5 }),
      Cacheable({ ttl: 3_153_600_000_000, staleTtl: 0, grace: 0 }),
      Cacheable({ ttl: () => 1e17 }),
      CachePut({ ttl: 0.5, graceBackoff: 0.5 }),
    ]) {
      expect(declare(decorator)).not.toThrow();
    }
  });

  it.each(['single', 'cluster'] as const)(
    'a fractional duration boots and stores, as getOrSet and set do (%s)',
    async (target) => {
      const keyPrefix = `rtk-d${randomBytes(4).toString('hex')}:`;
      const app = await createToolkitApp({ target, keyPrefix, providers: [FineDurations] });
      const svc = app.get(FineDurations);
      const cache = app.get(CacheService);
      const client = app.get(RedisConnection).client as RedisClient;
      const keys = new KeyBuilder(keyPrefix);
      expect(await svc.half()).toBe(1);
      // fresh for 1 ms (0.5 rounded up), kept stale for a minute
      expect(await client.pttl(keys.key('cache', 'half'))).toBeGreaterThan(55_000);
      expect(await svc.fraction()).toBe(2);
      expect(await svc.fraction()).toBe(2);
      expect(await cache.ttl('fraction')).toBeGreaterThan(85_000);
      expect(await svc.putHalf()).toBe(3);
      expect(await client.pttl(keys.key('cache', 'put-half'))).toBeGreaterThan(55_000);
    },
  );
});
