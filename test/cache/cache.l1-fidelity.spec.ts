/**
 * L1 holds what Redis holds. It kept the object given to set() or returned by the loader, not what the serializer
 * stores: with the JSON serializer a Map came back from L1 as a Map and from Redis as {}, NaN as NaN and null, an
 * object of a class with its prototype and without, and a caller's later change to its object showed in L1 only. So
 * one instance's get() answered another value than every other instance's, and than its own once L1 let go.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { CacheService } from '../../lib/index.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

class Point {
  constructor(
    readonly x: number,
    readonly y: number,
  ) {}
}

/** Values JSON does not keep as they are. */
const lossy = () => ({
  map: new Map([[1, 'one']]),
  nan: Number.NaN,
  holes: [undefined, 1],
  point: new Point(1, 2),
  when: new Date(0),
});

describe.each(['single', 'cluster'] as const)('L1 answers what Redis answers on %s', (target) => {
  it('set and getOrSet values read from L1 equal those read from Redis', async () => {
    const keyPrefix = `rtk-f${randomBytes(5).toString('hex')}:`;
    const withL1 = (await createToolkitApp({ target, keyPrefix, cache: { l1: { max: 100, ttl: 60_000 } } })).get(
      CacheService,
    );
    const plain = (await createToolkitApp({ target, keyPrefix })).get(CacheService);

    await withL1.set('set', lossy());
    const fromL1 = await withL1.get('set');
    const fromRedis = await plain.get('set');
    expect(fromRedis).toEqual({ map: {}, nan: null, holes: [null, 1], point: { x: 1, y: 2 }, when: new Date(0) });
    expect(fromL1).toStrictEqual(fromRedis);
    expect(withL1.stats().hits).toBe(1); // it was an L1 hit

    // The loader's callers get its value; later reads, from L1 or Redis, what was stored.
    const loaded = lossy();
    expect(await withL1.getOrSet('load', () => loaded)).toBe(loaded);
    expect(await withL1.getOrSet('load', () => lossy())).toStrictEqual(await plain.get('load'));

    // A caller's change to the object it stored is not the cache's value.
    const user = { name: 'ada' };
    await withL1.set('user', user);
    user.name = 'changed';
    expect(await withL1.get('user')).toEqual({ name: 'ada' });
    expect(await plain.get('user')).toEqual({ name: 'ada' });
  });
});
