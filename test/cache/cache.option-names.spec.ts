import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Injectable } from '@nestjs/common';
import { Cacheable, CacheEvict, CachePut, CacheService, InvalidOptionsError } from '../../lib/index.js';
import { errorOf } from '../support/errors.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const prefix = () => `rtk-o${randomBytes(5).toString('hex')}:`;

function declare(decorator: MethodDecorator): void {
  class Declared {
    m(): number {
      return 1;
    }
  }
  const descriptor = Object.getOwnPropertyDescriptor(Declared.prototype, 'm') as PropertyDescriptor;
  decorator(Declared.prototype, 'm', descriptor);
}

describe.each(['single', 'cluster'] as const)('cache option names on %s', (target) => {
  // A misspelled option was ignored: `{ tag: [...] }` stored the entry untagged (invalidateTags never reached it),
  // `{ tll }` used the default ttl, `{ sfot: true }` invalidated hard. Each is now InvalidOptionsError naming it.
  it('getOrSet, set, mset and invalidateTags refuse an option they do not know, naming the nearest one', async () => {
    const app = await createToolkitApp({ target, keyPrefix: prefix() });
    const cache = app.get(CacheService);
    let loads = 0;
    const tagged = await errorOf(() => cache.getOrSet('k', () => ++loads, { tag: ['t'] } as never));
    expect(tagged).toBeInstanceOf(InvalidOptionsError);
    expect((tagged as Error).message).toMatch(/cache\.getOrSet: tag is not a known option \(did you mean tags\?\)/);
    expect(loads).toBe(0);
    const tll = await errorOf(() => cache.set('k', 1, { tll: 5_000 } as never));
    expect(tll).toBeInstanceOf(InvalidOptionsError);
    expect((tll as Error).message).toMatch(/cache\.set: tll is not a known option \(did you mean ttl\?\)/);
    expect(await cache.get('k')).toBeUndefined();
    // set takes no getOrSet-only option
    await expect(cache.set('k', 1, { shouldCache: () => true } as never)).rejects.toThrow(/shouldCache is not/);
    await expect(cache.mset([{ key: 'm', value: 1, options: { staleTTL: 1 } as never }])).rejects.toThrow(
      /staleTTL is not a known option \(did you mean staleTtl\?\)/,
    );
    await cache.set('soft', 1, { tags: ['s'] });
    await expect(cache.invalidateTags('s', { sfot: true } as never)).rejects.toThrow(
      /cache\.invalidateTags: sfot is not a known option \(did you mean soft\?\)/,
    );
    expect(await cache.get('soft')).toBe(1);
    // cache-manager's set(key, value, ttl): the error says how to write it here
    await expect(cache.set('k', 1, 5_000 as never)).rejects.toThrow(/\{ ttl: 5000 \}/);
    await expect(cache.getOrSet('k', () => 1, 5_000 as never)).rejects.toThrow(/\{ ttl: 5000 \}/);
    // every documented option is still accepted
    await cache.set('ok', 1, { ttl: 1_000, staleTtl: 1, grace: 1, tags: ['a'] });
    const all = { ttl: 1_000, staleTtl: 1, tags: ['a'], shouldCache: () => true, softTimeout: 1, hardTimeout: 1_000 };
    expect(await cache.getOrSet('ok2', () => 2, { ...all, grace: 1, graceBackoff: 1 })).toBe(2);
    expect(await cache.getOrSetForever('ok3', () => 3, { tags: ['a'] })).toBe(3);
    expect(await cache.invalidateTags('a', { soft: true })).toBe(3);
  });

  // @CacheEvict({ tags: 'products' }) spread the string into one tag per character ('p', 'r', ...): nothing was
  // evicted and the stale value was served on. A tags function returning a string did the same.
  it('@CacheEvict with tags given as a string is refused, not spread into characters', async () => {
    @Injectable()
    class Products {
      loads = 0;
      @Cacheable({ key: 'all', tags: ['products'] })
      all(): number {
        return ++this.loads;
      }
      @CacheEvict({ tags: (() => 'products') as never })
      update(): string {
        return 'updated';
      }
    }
    const app = await createToolkitApp({ target, keyPrefix: prefix(), providers: [Products] });
    const products = app.get(Products);
    expect(await products.all()).toBe(1);
    const err = await errorOf(() => products.update());
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toMatch(/@CacheEvict on Products\.update: tags must be an array of strings/);
  });
});

describe('cache decorator option names', () => {
  it('@Cacheable, @CachePut and @CacheEvict refuse unknown or ill-typed options at declaration', () => {
    const refused = (decorator: () => MethodDecorator, message: RegExp) => {
      expect(() => declare(decorator())).toThrow(InvalidOptionsError);
      expect(() => declare(decorator())).toThrow(message);
    };
    refused(
      () => Cacheable({ tll: 5 } as never),
      /@Cacheable on Declared\.m: tll is not a known option \(did you mean ttl\?\)/,
    );
    refused(
      () => CachePut({ tag: ['x'] } as never),
      /@CachePut on Declared\.m: tag is not a known option \(did you mean tags\?\)/,
    );
    refused(
      () => Cacheable({ tags: 'x' } as never),
      /@Cacheable on Declared\.m: tags must be an array of strings or a function/,
    );
    refused(() => Cacheable({ key: 5 } as never), /key must be a string or a function/);
    refused(() => Cacheable({ resultTags: ['x'] } as never), /resultTags must be a function/);
    refused(
      () => CacheEvict({ tag: ['x'] } as never),
      /@CacheEvict on Declared\.m: tag is not a known option \(did you mean tags\?\)/,
    );
    refused(() => CacheEvict({ key: 'x' } as never), /key is not a known option \(did you mean keys\?\)/);
    refused(() => CacheEvict({ tags: 'products' } as never), /tags must be an array of strings or a function/);
    refused(() => CacheEvict({ pattern: ['a*'] } as never), /pattern must be a string or a function/);
    refused(() => CacheEvict({ keys: 5 } as never), /keys must be a string, an array of strings or a function/);
    refused(() => CacheEvict({ tags: ['a'], soft: 'yes' } as never), /soft must be true or false/);
    refused(() => CacheEvict({}), /@CacheEvict on Declared\.m: give keys, tags or pattern/);
    // what the docs show is accepted
    declare(
      Cacheable({
        ttl: 1,
        staleTtl: 1,
        grace: 1,
        graceBackoff: 1,
        tags: ['a'],
        resultTags: () => [],
        shouldCache: () => true,
        key: 'k',
      }),
    );
    declare(
      CacheEvict({
        tags: (id: string) => [`product:${id}`, 'products'],
        keys: ['featured'],
        pattern: 'list:*',
        soft: true,
      }),
    );
    declare(CacheEvict({ keys: 'one' }));
  });
});
