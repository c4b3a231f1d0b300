import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { CacheService } from '../../lib/index.js';
import { JsonSerializer, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const prefix = () => `rtk-ef${randomBytes(4).toString('hex')}:`;
/** Strings a JSON text would escape or could be taken for another value. */
const STRINGS = [
  '',
  'plain',
  'say "hi"\n\tand \\ go',
  'émoji 😀 \u2028',
  '{"a":1}',
  '"quoted"',
  '123',
  'null',
  'j{"x":[1]}',
];

/** The stored entry of `key`: its header and payload. */
async function stored(
  client: RedisClient,
  keyPrefix: string,
  key: string,
): Promise<{ header: string; payload: string }> {
  const raw = (await client.get(`${keyPrefix}cache:${key}`)) ?? '';
  const nl = raw.indexOf('\n');
  return { header: raw.slice(0, nl), payload: raw.slice(nl + 1) };
}

describe('cache entries of string values', () => {
  it('with the default serializer a string is stored as it is (no JSON text to scan and parse on a hit)', async () => {
    const keyPrefix = prefix();
    const app = await createToolkitApp({ keyPrefix, cache: { l1: { max: 100, ttl: 60_000 } } });
    const cache = app.get(CacheService);
    const client = app.get(RedisConnection).client as RedisClient;
    for (const [i, s] of STRINGS.entries()) {
      await cache.set(`s${i}`, s, { tags: i % 2 ? ['t1', 'a,b'] : undefined });
      const { header, payload } = await stored(client, keyPrefix, `s${i}`);
      // before: the payload was JSON.stringify(s) and the header ended with the tags
      expect(payload).toBe(s);
      expect(header.endsWith(i % 2 ? '["t1","a,b"]s' : '[]s')).toBe(true);
    }
    // read back from L1, and from Redis by an instance without L1, as the strings that were stored
    const plain = (await createToolkitApp({ keyPrefix })).get(CacheService);
    for (const [i, s] of STRINGS.entries()) {
      expect(await cache.get(`s${i}`)).toBe(s);
      expect(await plain.get(`s${i}`)).toBe(s);
      expect(await plain.getOrSetWithStatus(`s${i}`, () => 'loaded')).toEqual({ value: s, status: 'hit' });
    }
    // other values are still the serializer's JSON
    await cache.set('o', { a: 'b' });
    expect(await stored(client, keyPrefix, 'o')).toEqual({
      header: expect.stringMatching(/,\[\]$/),
      payload: '{"a":"b"}',
    });
    expect(await plain.get('o')).toEqual({ a: 'b' });
    // the tags and soft invalidation work on them as on any entry
    expect(await plain.invalidateTags('t1', { soft: true })).toBe(Math.floor(STRINGS.length / 2));
    expect(await plain.getOrSetWithStatus('s1', () => 'new')).toEqual({ value: STRINGS[1], status: 'stale' });
    await plain.invalidateTags('a,b');
    expect(await plain.get('s3')).toBeUndefined();
  });

  it('an entry of a string stored as JSON text (before the mark) is still read', async () => {
    const keyPrefix = prefix();
    const app = await createToolkitApp({ keyPrefix });
    const cache = app.get(CacheService);
    const client = app.get(RedisConnection).client as RedisClient;
    const now = Date.now();
    await client.set(`${keyPrefix}cache:old`, `${now + 60_000},${now + 60_000},0,[]\n${JSON.stringify('say "hi"\n')}`);
    await client.set(`${keyPrefix}cache:tagged`, `${now + 60_000},${now + 60_000},0,["t"]\n"x"`);
    expect(await cache.get('old')).toBe('say "hi"\n');
    expect(await cache.get('tagged')).toBe('x');
  });

  it("a serializer of the app's own, or a subclass of JsonSerializer, still gets the strings", async () => {
    class Prefixed extends JsonSerializer {
      override serialize(value: unknown): string {
        return `P${super.serialize(value)}`;
      }
      override deserialize<T>(raw: string): T {
        return super.deserialize<T>(raw.slice(1));
      }
    }
    const own = {
      serialize: (v: unknown) => `O${JSON.stringify(v)}`,
      deserialize: <T>(r: string) => JSON.parse(r.slice(1)) as T,
    };
    for (const [serializer, mark] of [
      [new Prefixed(), 'P'],
      [own, 'O'],
    ] as const) {
      const keyPrefix = prefix();
      const app = await createToolkitApp({ keyPrefix, serializer });
      const cache = app.get(CacheService);
      await cache.set('s', 'text "q"');
      const { header, payload } = await stored(app.get(RedisConnection).client as RedisClient, keyPrefix, 's');
      expect(payload).toBe(`${mark}"text \\"q\\""`);
      expect(header.endsWith('[]')).toBe(true);
      expect(await cache.get('s')).toBe('text "q"');
    }
  });
});
