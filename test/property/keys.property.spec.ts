/**
 * Property-based tests of KeyBuilder: for random (valid) caller input, keys and SCAN patterns stay under our prefix,
 * hash tags are only ever ours, and different inputs give different keys. The pattern property is checked against a
 * real Redis (SCAN MATCH) on a sample of keys, ours and foreign; and a glob (SCAN with pattern(), then patternMatcher)
 * finds exactly the keys Redis's own MATCH finds among the same keys stored unescaped.
 */
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { InvalidKeyError } from '../../lib/index.js';
import { KeyBuilder } from '../../lib/advanced.js';
import { hashSlot } from '../../lib/common/bulk-keys.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { scanAll } from '../support/scan.js';

const FEATURES = ['cache', 'rl', 'sess', 'lock'];

/** Characters that matter to Redis keys, hash tags and globs, mixed with ordinary and non-ASCII ones. */
const NASTY = [
  '*',
  '?',
  '[',
  ']',
  '\\',
  '{',
  '}',
  '%',
  ':',
  '^',
  '-',
  ' ',
  'a',
  'b',
  'Z',
  '0',
  'é',
  '字',
  '😀',
  '%7B',
  '%25',
];
const nastyString = fc.array(fc.constantFrom(...NASTY), { minLength: 1, maxLength: 12 }).map((a) => a.join(''));
/** Any valid part: printable unicode (no control characters), 1..200 chars, or one built from the nasty alphabet. */
const part = fc.oneof(
  nastyString,
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 200 }).filter((s) => isValid(s)),
);
const prefix = fc.oneof(
  fc.constant('rtk:'),
  fc.constant('app*[x]?:'),
  nastyString.map((s) => `${s}:`),
);

function isValid(s: string): boolean {
  try {
    KeyBuilder.validate(s);
    return true;
  } catch {
    return false;
  }
}

/** The part of `key` Redis hashes for its cluster slot (the first non-empty {...}), or undefined. */
function redisHashTag(key: string): string | undefined {
  const open = key.indexOf('{');
  if (open === -1) return undefined;
  const close = key.indexOf('}', open + 1);
  if (close === -1 || close === open + 1) return undefined;
  return key.slice(open + 1, close);
}

describe('KeyBuilder properties', () => {
  it('key(): always under <prefix><feature>:, never containing a brace (so no hash tag a caller could pick)', () => {
    fc.assert(
      fc.property(
        prefix.filter((p) => !/[{}]/.test(p)),
        fc.constantFrom(...FEATURES),
        fc.array(part, { minLength: 1, maxLength: 4 }),
        (pre, feature, parts) => {
          const key = new KeyBuilder(pre).key(feature, ...parts);
          expect(key.startsWith(`${pre}${feature}:`)).toBe(true);
          expect(key).not.toMatch(/[{}]/);
          expect(redisHashTag(key)).toBeUndefined();
        },
      ),
      { numRuns: 500 },
    );
  });

  it('tagged(): the hash tag Redis sees is exactly the escaped caller tag, so equal tags share a slot and nothing else decides it', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...FEATURES),
        part,
        fc.constantFrom('', ':fence', ':data', ':q'),
        (feature, tag, suffix) => {
          const keys = new KeyBuilder('rtk:');
          const key = keys.tagged(feature, tag, suffix);
          expect(key.startsWith(`rtk:${feature}:{`)).toBe(true);
          expect(redisHashTag(key)).toBe(KeyBuilder.escape(tag));
          expect(hashSlot(key)).toBe(hashSlot(keys.tagged(feature, tag, ':other')));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('key() with one part is injective: different inputs give different keys', () => {
    fc.assert(
      fc.property(part, part, (a, b) => {
        fc.pre(a !== b);
        const keys = new KeyBuilder('rtk:');
        expect(keys.key('cache', a)).not.toBe(keys.key('cache', b));
        expect(keys.tagged('lock', a)).not.toBe(keys.tagged('lock', b));
      }),
      { numRuns: 1000 },
    );
    // The classic collisions of naive escaping.
    const keys = new KeyBuilder('rtk:');
    expect(keys.key('cache', '{')).not.toBe(keys.key('cache', '%7B'));
    expect(keys.key('cache', '%7B')).not.toBe(keys.key('cache', '%257B'));
  });

  it('key() with several parts is injective over the list of parts', () => {
    // Any list with a ':' inside a part has a different list (split at that ':') that must give a different key.
    const smallPart = fc
      .array(fc.constantFrom('a', 'b', ':', '%', '{'), { minLength: 1, maxLength: 4 })
      .map((x) => x.join(''));
    const splittable = fc
      .array(smallPart, { minLength: 1, maxLength: 3 })
      .filter((parts) => parts.some((p) => p.includes(':')) && parts.join(':').split(':').every(isValid));
    fc.assert(
      fc.property(splittable, (a) => {
        const b = a.join(':').split(':');
        const keys = new KeyBuilder('rtk:');
        expect(keys.key('rl', ...a)).not.toBe(keys.key('rl', ...b));
      }),
      { numRuns: 200 },
    );
  });

  it('rejects every invalid input with InvalidKeyError (empty, control characters, over 1 KiB), never a wrong key', () => {
    const invalid = fc.oneof(
      fc.constant(''),
      fc
        .tuple(fc.string({ maxLength: 10 }), fc.integer({ min: 0, max: 31 }), fc.string({ maxLength: 10 }))
        .map(([a, c, b]) => `${a}${String.fromCharCode(c)}${b}`),
      fc.string({ minLength: 1, maxLength: 10 }).map((s) => s.repeat(Math.ceil(1025 / s.length) + 1)),
      fc.constant('\u007f'),
    );
    fc.assert(
      fc.property(invalid, (bad) => {
        const keys = new KeyBuilder('rtk:');
        expect(() => keys.key('cache', bad)).toThrow(InvalidKeyError);
        expect(() => keys.tagged('lock', bad)).toThrow(InvalidKeyError);
        expect(() => keys.pattern('cache', bad)).toThrow(InvalidKeyError);
      }),
      { numRuns: 300 },
    );
  });
});

describe('KeyBuilder.pattern against a real Redis (SCAN MATCH)', () => {
  const redis = usePrivateRedis();
  let client: Redis;
  const prefixes = ['rtk:', 'app*[x]?:'];
  /** Ours: keys of every feature under each prefix; foreign: look-alikes a loose pattern would match. */
  const ours = new Map<string, string[]>();

  beforeAll(async () => {
    client = trackForCleanup(new Redis(redis.server.url));
    const sample = fc.sample(part, { numRuns: 150, seed: 42 });
    const all: string[] = [];
    for (const pre of prefixes) {
      const keys = new KeyBuilder(pre);
      for (const feature of FEATURES) {
        const built = [
          ...sample.map((p) => keys.key(feature, p)),
          ...sample.slice(0, 30).map((p) => keys.tagged(feature, p, ':x')),
        ];
        ours.set(`${pre}|${feature}`, built);
        all.push(...built);
      }
    }
    const foreign = [
      'cache:a',
      'rtk:cachex:a',
      'rtk:cache',
      'xrtk:cache:a',
      'rtk:',
      'rtk::a',
      'rtk:rl',
      'other:rtk:cache:a',
      'rtk:Cache:a',
      'appX[x]?:cache:a',
      'app*[x]Z:cache:a',
      'app*x?:cache:a',
      'app:cache:a',
      '{rtk:cache:}a',
      'rtk:{cache}:a',
      ...sample.slice(0, 20).map((p) => `foreign:${p}`),
    ];
    all.push(...foreign);
    const pipeline = client.pipeline();
    for (const key of all) pipeline.set(key, '1');
    await pipeline.exec();
  });

  it('a random user pattern only ever matches keys under <prefix><feature>:', async () => {
    const userPattern = fc.oneof(
      nastyString,
      fc.constantFrom('*', '?*', '[a-z]*', '\\*', '*}*', '{*', '*:*', '[^x]*', '\\', '[', ']*', '*\\'),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...prefixes),
        fc.constantFrom(...FEATURES),
        userPattern,
        async (pre, feature, user) => {
          const pattern = new KeyBuilder(pre).pattern(feature, user);
          for (const key of await scanAll(client, pattern)) expect(key.startsWith(`${pre}${feature}:`)).toBe(true);
        },
      ),
      { numRuns: 120 },
    );
  });

  it("'*' finds every key of the feature, and a glob-escaped part finds its own key", async () => {
    for (const pre of prefixes) {
      for (const feature of FEATURES) {
        const keys = new KeyBuilder(pre);
        const expected = ours.get(`${pre}|${feature}`) ?? [];
        expect(new Set(await scanAll(client, keys.pattern(feature, '*')))).toEqual(new Set(expected));
      }
    }
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...fc.sample(part, { numRuns: 150, seed: 42 })), async (p) => {
        const keys = new KeyBuilder('rtk:');
        expect(await scanAll(client, keys.pattern('cache', KeyBuilder.globEscape(p)))).toEqual([keys.key('cache', p)]);
      }),
      { numRuns: 60 },
    );
  });
});

describe('KeyBuilder.pattern and patternMatcher: the glob means what it means on the keys as given', () => {
  const redis = usePrivateRedis();
  let client: Redis;
  const keys = new KeyBuilder('rtk:');
  /** Small alphabets, so that random globs match often: the escaped characters, their escapes' letters, glob syntax. */
  const keyChars = [
    'a',
    'b',
    ':',
    '%',
    '{',
    '}',
    '3',
    'A',
    '7',
    'B',
    '2',
    '5',
    'é',
    '*',
    '?',
    '[',
    ']',
    '\\',
    '^',
    '-',
  ];
  const userKey = fc.array(fc.constantFrom(...keyChars), { minLength: 1, maxLength: 5 }).map((a) => a.join(''));
  const glob = fc
    .array(
      fc.constantFrom(
        ...['a', ':', '%', '{', '}', '3', 'A', 'B', '?', '*', '[', ']', '^', '-', '\\', 'é', '[:]', '[^a]', '[%-;]'],
        ...['\\:', '\\*', '3A', '%3A', '%25', '[]', '[^]'],
      ),
      { minLength: 1, maxLength: 6 },
    )
    .map((a) => a.join(''));
  /** Each user key by the key KeyBuilder builds for it. */
  const byBuilt = new Map<string, string>();

  beforeAll(async () => {
    client = trackForCleanup(new Redis(redis.server.url));
    const sample = [...new Set(fc.sample(userKey, { numRuns: 400, seed: 7 }))];
    const pipeline = client.pipeline();
    for (const k of sample) {
      byBuilt.set(keys.key('cache', k), k);
      pipeline.set(keys.key('cache', k), '1');
      pipeline.set(`raw:${k}`, '1'); // the key as given, unescaped: what the glob is meant for
    }
    await pipeline.exec();
  });

  it("SCAN MATCH pattern() then patternMatcher() finds exactly the keys Redis's own MATCH finds unescaped", async () => {
    await fc.assert(
      fc.asyncProperty(glob, async (user) => {
        const expected = (await scanAll(client, `raw:${user}`)).map((k) => k.slice('raw:'.length)).sort();
        const matches = keys.patternMatcher('cache', user);
        const found = (await scanAll(client, keys.pattern('cache', user))).filter(matches);
        expect({ user, keys: found.map((k) => byBuilt.get(k)).sort() }).toEqual({ user, keys: expected });
      }),
      { numRuns: 400, seed: 11 },
    );
  });

  it('never matches a key of another feature or prefix', () => {
    const matches = keys.patternMatcher('cache', '*');
    expect(matches(keys.key('cache', 'a:b'))).toBe(true);
    expect(matches(keys.key('rl', 'a'))).toBe(false);
    expect(matches(new KeyBuilder('other:').key('cache', 'a'))).toBe(false);
  });
});
