import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FEATURES, KeyBuilder } from '../../lib/common/keys.js';
import { CACHE_L1_CHANNEL } from '../../lib/cache/cache.l1.js';

/**
 * Every key and internal channel name comes from KeyBuilder and the one table of feature names in lib/common/keys.ts.
 * This scans lib/ for the ways a prefix used to be glued by hand, so that it stays true.
 */
const LIB = fileURLToPath(new URL('../../lib/', import.meta.url));
const KEYS_FILE = 'common/keys.ts';

const RULES: [name: string, re: RegExp][] = [
  ['internal channel namespace spelled out', /__rtk/],
  ['default keyPrefix spelled out', /['"`]rtk:['"`]/],
  ['a feature name literal with its colon', /['"`](rl|sess|ps|lock|cache):[\w:]*['"`{]/],
  ['a bare feature name literal used for keys', /['"`](rl|sess|ps)['"`]/],
  [
    'a KeyBuilder method given a literal feature',
    /\.(featurePrefix|tagHead|key|tagged|taggedTrusted|companion|pattern)\(\s*['"`]/,
  ],
  ['text glued after a prefix in a template', /\$\{[^}]*[pP]refix[^}]*\}[\w:{]/],
  ['a prefix concatenated with a literal', /[pP]refix\b[\w.]*\s*\+\s*['"`]|['"`]\s*\+\s*[\w.]*[pP]refix\b/],
  ['a key sliced apart to rebuild another', /\.slice\([\w.]*[pP]refix\.length\)\}\}/],
];

function withoutComments(source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

function offenders(file: string, source: string): string[] {
  const out: string[] = [];
  withoutComments(source)
    .split('\n')
    .forEach((line, i) => {
      for (const [name, re] of RULES) if (re.test(line)) out.push(`${file}:${i + 1}: ${name}: ${line.trim()}`);
    });
  return out;
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? tsFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

describe('keys and channels come only from KeyBuilder', () => {
  it('no file in lib/ but common/keys.ts glues a key or channel prefix by hand', () => {
    const files = tsFiles(LIB).filter((f) => relative(LIB, f) !== KEYS_FILE);
    expect(files.length).toBeGreaterThan(40);
    const found = files.flatMap((f) => offenders(relative(LIB, f), readFileSync(f, 'utf8')));
    expect(found).toEqual([]);
  });

  it('the check catches the hand-made prefixes lib/ had before (so it can fail)', () => {
    // biome-ignore-start lint/suspicious/noTemplateCurlyInString: these are source lines, not templates
    const before = [
      'this.channelPrefix = `${options.keyPrefix}ps:`;',
      'return `${this.options.keyPrefix}ps:stream:{${KeyBuilder.escape(userId)}}`;',
      'return `${this.featurePrefix}{${redisKey.slice(this.featurePrefix.length)}}:lock`;',
      "const internal = this.featurePrefix + '{';",
      "this.tagPrefix = `${keys.featurePrefix('rl')}{`;",
      "const lock = this.keys.tagged('lock', resource);",
      "export const CACHE_L1_CHANNEL = '__rtk:cache:l1';",
      "const INTERNAL_PREFIX = '__rtk:';",
      "this.records = new SessionRecords(options.client, options.prefix ?? 'rtk:');",
      "export const SESSION_FEATURE = 'sess';",
      "const USER_INDEX_FEATURE = 'sess:user';",
    ];
    // biome-ignore-end lint/suspicious/noTemplateCurlyInString: -
    expect(before.filter((line) => offenders('old.ts', line).length === 0)).toEqual([]);
  });

  it('the table gives the documented key layout and internal channel', () => {
    const keys = new KeyBuilder('rtk:');
    expect(keys.key(FEATURES.cache, 'products:1')).toBe('rtk:cache:products%3A1');
    expect(keys.companion(FEATURES.cache, keys.key(FEATURES.cache, 'products:1'), ':lock')).toBe(
      'rtk:cache:{products%3A1}:lock',
    );
    expect(keys.tagHead(FEATURES.rateLimit)).toBe('rtk:rl:{');
    expect(keys.taggedTrusted(FEATURES.session, 'abc', ':gone')).toBe('rtk:sess:{abc}:gone');
    expect(keys.tagged(FEATURES.sessionUserIndex, 'u1')).toBe('rtk:sess:user:{u1}');
    expect(keys.tagged(FEATURES.lock, 'job')).toBe('rtk:lock:{job}');
    expect(keys.channel('orders')).toBe('rtk:ps:orders');
    expect(keys.tagged(FEATURES.pubsubStream, 'u:1')).toBe('rtk:ps:stream:{u%3A1}');
    expect(CACHE_L1_CHANNEL).toBe('__rtk:cache:l1');
    expect(KeyBuilder.isInternalChannel(CACHE_L1_CHANNEL)).toBe(true);
    expect(KeyBuilder.isInternalChannel('user:1')).toBe(false);
  });
});
