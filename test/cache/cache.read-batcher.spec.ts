import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { CacheService } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { recordCommands } from '../support/command-recorder.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

afterEach(closeToolkitApps);

describe('cache reads of one key in one turn (single server)', () => {
  it('1,000 concurrent cold misses: one read of the key, one loader call (issue 15)', async () => {
    const app = await createToolkitApp({ keyPrefix: `rtk-rb${randomBytes(4).toString('hex')}:` });
    const cache = app.get(CacheService);
    const client = app.get(RedisConnection).client as RedisClient;
    let loads = 0;
    const loader = async () => {
      loads++;
      await sleep(20);
      return { n: 1 };
    };
    const { value, commands } = await recordCommands(client, () =>
      Promise.all(Array.from({ length: 1_000 }, () => cache.getOrSet('cold', loader))),
    );
    expect(value).toHaveLength(1_000);
    expect(value.every((v) => v.n === 1)).toBe(true);
    expect(loads).toBe(1);
    // before: 1,000 GETs of the key, sent as 32 MGETs
    expect(commands.filter((c) => c === 'get' || c === 'mget')).toHaveLength(2); // the read + the locked re-read
    // each caller still gets its own copy of a hit (decoded apart)
    const [a, b] = await Promise.all([cache.get<{ n: number }>('cold'), cache.get<{ n: number }>('cold')]);
    expect(a).toEqual({ n: 1 });
    expect(a).not.toBe(b);
  });

  it('getOrSet calls of one key with the same options in one turn share one fetch; other options or a later turn do not', async () => {
    let decoded = 0;
    const counting = {
      serialize: (value: unknown) => JSON.stringify(value),
      deserialize: <T>(raw: string): T => {
        decoded++;
        return JSON.parse(raw) as T;
      },
    };
    const app = await createToolkitApp({
      keyPrefix: `rtk-rb${randomBytes(4).toString('hex')}:`,
      serializer: counting,
    });
    const cache = app.get(CacheService);
    await cache.set('hot', { n: 1 }, { ttl: 60_000 });
    const unused = async () => ({ n: 0 });
    decoded = 0;
    const same = await Promise.all(Array.from({ length: 100 }, () => cache.getOrSetWithStatus('hot', unused)));
    // before: every caller decoded the shared reply on its own (100 decodes, 100 copies)
    expect(decoded).toBe(1);
    expect(same.every((r) => r.status === 'hit' && r.value.n === 1)).toBe(true);
    expect(new Set(same.map((r) => r.value)).size).toBe(1);
    decoded = 0;
    const mixed = await Promise.all([
      cache.getOrSet('hot', unused),
      cache.getOrSet('hot', unused, { softTimeout: 5 }),
      cache.getOrSet('hot', unused, { softTimeout: 5 }),
    ]);
    // other options fetch apart (their decisions may differ); the two alike share
    expect(decoded).toBe(2);
    expect(mixed[1]).toBe(mixed[2]);
    expect(mixed[0]).not.toBe(mixed[1]);
    // a call in a later turn reads for itself, and sees a write made in between
    const first = cache.getOrSet('hot', unused);
    await cache.set('hot', { n: 2 }, { ttl: 60_000 });
    expect(await cache.getOrSet('hot', unused)).toEqual({ n: 2 });
    // the first is concurrent with the write: either answer is right
    expect([1, 2]).toContain((await first).n);
  });

  it('a read issued after a write completed sees the write, in the same turn as an earlier read too', async () => {
    const app = await createToolkitApp({ keyPrefix: `rtk-rb${randomBytes(4).toString('hex')}:` });
    const cache = app.get(CacheService);
    await cache.set('k', 2);
    expect(await cache.get('k')).toBe(2);
    const reads = await Promise.all([cache.get('k'), cache.set('k', 3).then(() => cache.get('k'))]);
    // the first read is concurrent with the write (either answer is right); the one issued after it must see it
    expect([2, 3]).toContain(reads[0]);
    expect(reads[1]).toBe(3);
  });
});
