/**
 * Hostile keys and payloads against the foundation: glob characters, braces, line breaks, RESP look-alikes, huge
 * keys. Each is either rejected with InvalidKeyError before any Redis call, or contained: stored under our prefix,
 * never matched by another caller's pattern, never picking its own cluster slot. Also checks that every Lua script
 * in the library is a constant (user input reaches Lua only as KEYS/ARGV), which covers the features once merged.
 */
import 'reflect-metadata';
import { Cluster, Redis } from 'ioredis';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CacheService, InvalidKeyError, type Serializer } from '../../lib/index.js';
import { KeyBuilder } from '../../lib/advanced.js';
import { hashSlot } from '../../lib/common/bulk-keys.js';
import { trackForCleanup } from '../support/private-servers.js';
import { sharedServers } from '../support/shared-servers.js';
import { scanAll } from '../support/scan.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

const keys = new KeyBuilder(`rtk-sec-${Date.now()}:`);
const LIB = fileURLToPath(new URL('../../lib/', import.meta.url));

const REJECTED: [string, string][] = [
  ['empty', ''],
  ['newline', 'user\nFLUSHALL'],
  ['CRLF (RESP injection)', 'a\r\n*1\r\n$8\r\nFLUSHALL\r\n'],
  ['NUL', 'a\u0000b'],
  ['DEL', 'a\u007fb'],
  ['10 KB', 'x'.repeat(10 * 1024)],
  ['1 KiB + 1 byte of multi-byte characters', 'é'.repeat(513)],
];

const CONTAINED = [
  '*',
  '?',
  '[a-z]',
  '\\',
  '{',
  '}',
  '{tag}',
  '}{',
  '{}',
  'a{b}c',
  '%7B',
  '..',
  '../../etc/passwd',
  ' ',
  '😀',
  "'; DROP TABLE --",
  '$(rm -rf /)',
];

describe('hostile keys', () => {
  it.each(REJECTED)('%s is rejected with InvalidKeyError by key(), tagged() and pattern()', (_, bad) => {
    expect(() => keys.key('cache', bad)).toThrow(InvalidKeyError);
    expect(() => keys.tagged('lock', bad)).toThrow(InvalidKeyError);
    expect(() => keys.pattern('cache', bad)).toThrow(InvalidKeyError);
    expect(() => KeyBuilder.validate(bad)).toThrow(InvalidKeyError);
  });

  it('a non-string (number, object, null) is rejected too', () => {
    for (const bad of [42, {}, null, undefined, ['a']])
      expect(() => keys.key('cache', bad as unknown as string)).toThrow(InvalidKeyError);
  });

  it('contained inputs are stored under our prefix on a real server and are not reachable by a foreign pattern', async () => {
    const client = trackForCleanup(new Redis(sharedServers().single.url));
    const built = CONTAINED.map((c) => keys.key('cache', c));
    expect(new Set(built).size).toBe(CONTAINED.length);
    await Promise.all(built.map((k, i) => client.set(k, String(i))));
    for (const [i, c] of CONTAINED.entries()) expect(await client.get(keys.key('cache', c))).toBe(String(i));
    // A caller's '*' as a *key* is literal; as a *pattern* it is confined to the feature.
    const scan = (pattern: string): Promise<string[]> => scanAll(client, pattern);
    expect(new Set(await scan(keys.pattern('cache', '*')))).toEqual(new Set(built));
    expect(await scan(keys.pattern('rl', '*'))).toEqual([]);
    expect(await scan(keys.pattern('cache', KeyBuilder.globEscape('*')))).toEqual([keys.key('cache', '*')]);
    await client.unlink(...built);
  });

  it('braces from a caller never choose the cluster slot (checked with CLUSTER KEYSLOT on the shared cluster)', async () => {
    const cluster = trackForCleanup(new Cluster(sharedServers().cluster));
    const node = (await (async () => {
      await cluster.ping();
      return cluster.nodes('master')[0];
    })()) as Redis;
    for (const c of CONTAINED) {
      const key = keys.key('cache', c);
      // No hash tag: the slot is the hash of the whole key, as if it had no braces at all.
      expect(Number(await node.call('CLUSTER', 'KEYSLOT', key))).toBe(hashSlot(key));
      expect(key).not.toMatch(/[{}]/);
      // With our tag: the slot is decided by the escaped caller tag alone.
      const tagged = keys.tagged('lock', c, ':fence');
      expect(Number(await node.call('CLUSTER', 'KEYSLOT', tagged))).toBe(
        Number(await node.call('CLUSTER', 'KEYSLOT', `{${KeyBuilder.escape(c)}}`)),
      );
    }
  });
});

/** Writes `bytes` on a raw TCP connection, as a client that builds commands by concatenation would, and waits for `replies` replies. */
function naiveWrite(port: number, bytes: string, replies: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`naive write: ${replies} replies expected, got ${JSON.stringify(got)}`));
    }, 10_000);
    socket.on('connect', () => socket.write(bytes));
    socket.on('data', (chunk) => {
      got += chunk.toString('utf8');
      if (got.split('\r\n').filter((l) => l.length > 0).length >= replies) {
        clearTimeout(timer);
        socket.end();
        resolve(got);
      }
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Passes strings through unchanged, so a payload's raw CR/LF bytes reach the wire (JSON would escape them). */
class RawStringSerializer implements Serializer {
  serialize(value: unknown): string {
    return String(value);
  }
  deserialize<T = unknown>(raw: string): T {
    return raw as T;
  }
}

describe('hostile payloads through CacheService', () => {
  afterEach(closeToolkitApps);

  const injection = (marker: string): string =>
    `x\r\n*3\r\n$3\r\nSET\r\n$${Buffer.byteLength(marker)}\r\n${marker}\r\n$8\r\ninjected\r\n`;

  it('the marker check works: the same bytes written by a naive client DO create the marker key', async () => {
    const port = sharedServers().single.port;
    const client = trackForCleanup(new Redis(sharedServers().single.url));
    const marker = `rtk-sec-injected-control-${Date.now()}`;
    const probeKey = `rtk-sec-naive-${Date.now()}`;
    // An inline command with the payload concatenated: Redis reads "SET probeKey x", then the smuggled SET.
    await naiveWrite(port, `SET ${probeKey} ${injection(marker)}`, 2);
    expect(await client.get(marker)).toBe('injected');
    await client.unlink(marker, probeKey);
  });

  it.each([
    ['JSON (default)', undefined],
    ['a pass-through serializer (raw CR/LF on the wire)', new RawStringSerializer()],
  ])(
    'with %s: RESP look-alikes, huge and odd values round-trip verbatim and create nothing else',
    async (_, serializer) => {
      const prefix = `rtk-sec-cache-${Date.now()}-${Math.random().toString(36).slice(2, 6)}:`;
      const app = await createToolkitApp({
        target: 'single',
        keyPrefix: prefix,
        ...(serializer ? { serializer } : {}),
      });
      const cache = app.get(CacheService);
      const client = trackForCleanup(new Redis(sharedServers().single.url));
      const marker = `rtk-sec-injected-${Date.now()}-${Math.random().toString(36).slice(2, 6)}`;
      const strings = [injection(marker), 'y'.repeat(2 * 1024 * 1024), "redis.call('FLUSHALL')", '\u0000\u2028😀'];
      const objects: unknown[] = [
        { [injection(marker)]: injection(marker) },
        { '\r\n': '\u0000', nested: ['\u2028', '😀', JSON.parse('{"__proto__": {"polluted": true}}') as unknown] },
      ];
      const payloads = serializer ? strings : [...strings, ...objects];
      for (const [i, payload] of payloads.entries()) {
        await cache.set(`payload-${i}`, payload, { ttl: 60_000 });
        const back = await cache.get(`payload-${i}`);
        expect(back).toEqual(serializer ? payload : JSON.parse(JSON.stringify(payload)));
        // cache-aside too: the loader's value is stored and served verbatim
        expect(await cache.getOrSet(`loaded-${i}`, async () => payload, { ttl: 60_000 })).toEqual(back);
        expect(await cache.get(`loaded-${i}`)).toEqual(back);
      }
      // The smuggled SET never ran, and nothing exists under our prefix but the entries we wrote.
      expect(await client.exists(marker)).toBe(0);
      const ours = await scanAll(client, `${KeyBuilder.globEscape(prefix)}*`);
      expect(ours).toHaveLength(payloads.length * 2);
      expect(ours.every((k) => k.startsWith(`${prefix}cache:`))).toBe(true);
      await client.unlink(...ours);
      // JSON.parse of "__proto__" makes an own property: nothing reaches Object.prototype.
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    },
  );
});

describe('Lua receives user input only as KEYS/ARGV', () => {
  function files(dir: string, ext: string): string[] {
    return readdirSync(dir).flatMap((name) => {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) return files(path, ext);
      return path.endsWith(ext) ? [path] : [];
    });
  }

  it('every LuaScript in lib/ is built from a .lua file or a constant string, never an interpolated one', () => {
    const offenders: string[] = [];
    for (const file of files(LIB, '.ts')) {
      const src = readFileSync(file, 'utf8');
      // new LuaScript(name, <source>, n): the source must not be a template literal with ${...} or a concatenation
      // (the name may be derived: it is only the command's name, never code).
      for (const match of src.matchAll(
        /new LuaScript(?:<[^>]*>)?\(\s*(`[^`]*`|'[^']*'|"[^"]*"|[\w.]+)\s*,\s*([\s\S]*?),\s*[\w.]+\s*\)\s*;/g,
      )) {
        const source = match[2];
        if (/\$\{/.test(source) || /['"`]\s*\+|\+\s*['"`]/.test(source))
          offenders.push(`${file}: ${match[0].slice(0, 120)}`);
      }
      expect(src.match(/new LuaScript\b/g)?.length ?? 0).toBe(
        [...src.matchAll(/new LuaScript(?:<[^>]*>)?\(\s*(`[^`]*`|'[^']*'|"[^"]*"|[\w.]+)\s*,/g)].length,
      );
      // defineCommand / eval with a built string outside LuaScript would bypass the rule.
      if (/\.(eval|evalsha|defineCommand)\s*\(/.test(src) && !file.endsWith('lua-script.ts'))
        offenders.push(`${file}: calls eval/defineCommand directly`);
    }
    expect(offenders).toEqual([]);
  });

  it('no .lua file builds code at run time (loadstring/load) or calls EVAL from inside a script', () => {
    const offenders = files(LIB, '.lua').filter((file) =>
      /\b(loadstring|load|dofile)\s*\(|redis\.p?call\(\s*['"](eval|evalsha|script)['"]/i.test(
        readFileSync(file, 'utf8'),
      ),
    );
    expect(offenders).toEqual([]);
  });
});
