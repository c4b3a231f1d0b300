/**
 * An Observable is not a value: JSON stored `of({ a: 1 })` as `{}`, so @Cacheable on a method returning one (a
 * microservice or HTTP handler, an HttpService call) answered the first call with the Observable and every later one
 * with `{}`, without a word. It is refused like any value the serializer cannot encode: SerializationError, nothing
 * stored, the message naming the fix.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Injectable } from '@nestjs/common';
import { of } from 'rxjs';
import { Cacheable, CacheService, SerializationError } from '../../lib/index.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

@Injectable()
class Quotes {
  calls = 0;

  @Cacheable({ key: 'quote' })
  quote() {
    this.calls++;
    return of({ price: 1 });
  }
}

describe.each(['single', 'cluster'] as const)('an Observable given to the cache on %s', (target) => {
  it('is refused with SerializationError by set, getOrSet and @Cacheable; nothing is stored', async () => {
    const app = await createToolkitApp({
      target,
      keyPrefix: `rtk-x${randomBytes(5).toString('hex')}:`,
      providers: [Quotes],
    });
    const cache = app.get(CacheService);
    const refusal = /an Observable cannot be cached .*lastValueFrom/;
    await expect(cache.set('s', of(1))).rejects.toThrow(SerializationError);
    await expect(cache.set('s', of(1))).rejects.toThrow(refusal);
    await expect(cache.getOrSet('g', () => of(1))).rejects.toThrow(refusal);
    expect(await cache.get('s')).toBeUndefined();
    expect(await cache.get('g')).toBeUndefined();

    const quotes = app.get(Quotes);
    await expect(quotes.quote()).rejects.toThrow(SerializationError);
    await expect(quotes.quote()).rejects.toThrow(refusal); // not `{}` served from the cache
    expect(quotes.calls).toBe(2);
    expect(await cache.get('quote')).toBeUndefined();
  });
});
