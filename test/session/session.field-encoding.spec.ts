import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { InvalidKeyError, RedisSessionStore, SerializationError, type Serializer } from '../../lib/index.js';
import { generateSessionId } from '../../lib/advanced.js';
import { trackForCleanup } from '../support/private-servers.js';
import { sharedServers } from '../support/shared-servers.js';

// The store's fields are checked for lone surrogates from their JSON text with the default serializer (a `\ud` escape
// in it has the value walked), no longer by walking every value before serializing it (docs/session.md, Well-formed
// text). These pin what that path refuses and keeps.

const store = (serializer?: Serializer) =>
  new RedisSessionStore({
    client: trackForCleanup(new Redis(sharedServers().single.url)),
    prefix: `rtk-enc-${randomBytes(4).toString('hex')}:`,
    ...(serializer ? { serializer } : {}),
  });
const cookie = { originalMaxAge: 60_000, httpOnly: true, path: '/' };

describe('RedisSessionStore field encoding', () => {
  it('a lone surrogate anywhere JSON writes it is refused (400), nothing stored; text that only looks like one is kept', async () => {
    const s = store();
    const refused: Record<string, unknown>[] = [
      { deep: [{ ok: 1 }, { ['k\uDC00']: 1 }] },
      { deep: { list: ['fine', 'x\uD800'] } },
      { ['\uDBFF']: 'name' },
      { when: new Date(0), note: 'y\uDFFF' },
    ];
    for (const data of refused) {
      const sid = generateSessionId();
      const err = await s.set(sid, { cookie, ...data } as never).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidKeyError);
      expect(err).toMatchObject({ status: 400, statusCode: 400 });
      expect(await s.get(sid)).toBeNull();
    }
    // a value that cannot be serialized and holds one: still the surrogate's error, as before
    const both = await s
      .set(generateSessionId(), { cookie, bad: { n: 1n, t: '\uD800' } } as never)
      .catch((e: unknown) => e);
    expect(both).toBeInstanceOf(InvalidKeyError);
    const bigint = await s.set(generateSessionId(), { cookie, bad: { n: 1n } } as never).catch((e: unknown) => e);
    expect(bigint).toBeInstanceOf(SerializationError);
    // a backslash followed by "ud800" is text, not an escape: stored and read back as it was
    const sid = generateSessionId();
    const lookalike = { path: '\\ud800', nested: ['a\\\\udfff', { '\\udbff': '\\\\\\ud800' }], pair: '😀', [`k😀`]: 1 };
    await s.set(sid, { cookie, ...lookalike } as never);
    expect(await s.get(sid)).toEqual({ cookie, ...lookalike });
  });

  it('a serializer of your own still has the value walked before it runs', async () => {
    const escaping: Serializer = {
      serialize: (v: unknown) => JSON.stringify(v),
      deserialize: <T>(raw: string) => JSON.parse(raw) as T,
    };
    const err = await store(escaping)
      .set(generateSessionId(), { cookie, note: 'x\uD800' } as never)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidKeyError);
  });
});
