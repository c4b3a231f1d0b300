/**
 * An adversarial review of the cache as tests: CacheService (stampedes, timeouts, re-entrancy, failures, hostile keys
 * and tags, clear() confined to its namespace, L1 coherence against foreign writes and killed connections) and
 * HttpCacheInterceptor (poisoning and leaks between users and URLs, bodies that are not plain JSON), on Express and
 * Fastify. The three lib bugs it found are fixed (X-Cache on a thrown error, a route's own Content-Type kept, bytes
 * never stored as JSON).
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Controller, Get, Header, NotFoundException, Req, Res, StreamableFile } from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import { Cluster, Redis } from 'ioredis';
import {
  CacheLoadTimeoutError,
  CacheService,
  InvalidKeyError,
  RedisReplyError,
  RedisToolkitError,
  RedisUnavailableError,
  SerializationError,
} from '../../lib/index.js';
import { HttpCacheInterceptor } from '../../lib/advanced.js';
import { TRACKING_CONNECTION_NAME } from '../../lib/cache/cache.tracking.js';
import { errorOf } from '../support/errors.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisServer } from '../support/redis-server.js';
import { sharedServers } from '../support/shared-servers.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { PLATFORMS, type RedisTarget, closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { settleWithin, sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const rand = () => randomBytes(5).toString('hex');
const L1_WAIT = 5_000;

function foreignClient(target: 'single' | 'cluster'): Redis | Cluster {
  return trackForCleanup(
    target === 'cluster' ? new Cluster(sharedServers().cluster) : new Redis(sharedServers().single.url),
  );
}

async function cacheApp(target: RedisTarget, keyPrefix: string, extra: Record<string, unknown> = {}) {
  const app = await bootToolkitApp({ target, keyPrefix, maxReconnectDelay: 100, ...extra });
  return app.get(CacheService);
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------------------------

const runs = { auth: 0, cookie: 0, q: 0, head: 0, flaky: 0, buf: 0, nul: 0, vary: 0, file: 0 };

interface AnyReq {
  headers: Record<string, string | undefined>;
  url: string;
  originalUrl?: string;
}
interface AnyRes {
  header(name: string, value: string): unknown;
}

class WithToJson {
  secret = 'never sent';
  toJSON() {
    return { shown: 1 };
  }
}

@Controller('h')
class HostileController {
  @Get('auth')
  auth(@Req() req: AnyReq) {
    runs.auth++;
    return { auth: req.headers.authorization ?? null };
  }

  @Get('cookie')
  cookie(@Res({ passthrough: true }) res: AnyRes) {
    runs.cookie++;
    res.header('Set-Cookie', `sid=s${runs.cookie}`);
    return { sid: `s${runs.cookie}` };
  }

  @Get('q')
  q(@Req() req: AnyReq) {
    runs.q++;
    return { url: req.originalUrl ?? req.url };
  }

  @Get('head')
  head() {
    runs.head++;
    return { n: runs.head };
  }

  @Get('flaky')
  flaky() {
    runs.flaky++;
    if (runs.flaky === 1) throw new NotFoundException('first');
    return { n: runs.flaky };
  }

  @Get('buf')
  buf() {
    runs.buf++;
    return Buffer.from('raw-bytes');
  }

  @Get('file')
  file() {
    runs.file++;
    return new StreamableFile(Buffer.from(`file${runs.file}`));
  }

  @Get('tojson')
  tojson() {
    return new WithToJson();
  }

  @Get('circular')
  circular() {
    const o: Record<string, unknown> = { a: 1 };
    o.self = o;
    return o;
  }

  @Get('bigint')
  bigint() {
    return { n: 10n };
  }

  @Get('null')
  nul() {
    runs.nul++;
    return null;
  }

  @Get('ctype')
  @Header('Content-Type', 'application/vnd.api+json')
  ctype() {
    return { data: [] };
  }

  @Get('vary')
  @Header('Vary', 'Cookie')
  vary(@Req() req: AnyReq) {
    runs.vary++;
    return { cookie: req.headers.cookie ?? null };
  }
}

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A request with its path sent byte for byte (supertest would normalise it, and drop a '#'). */
function rawGet(port: number, path: string, headers: Record<string, string> = {}, method = 'GET') {
  return new Promise<RawResponse>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
      );
    });
    req.setTimeout(5_000, () => req.destroy(new Error(`no answer for ${method} ${path}`)));
    req.on('error', reject);
    req.end();
  });
}

describe.each(PLATFORMS)('HttpCacheInterceptor against hostile requests on %s', (platform) => {
  let port = 0;
  beforeEach(async () => {
    for (const k of Object.keys(runs) as (keyof typeof runs)[]) runs[k] = 0;
    const app = await createToolkitApp({
      http: true,
      platform,
      keyPrefix: `rtk-hh${rand()}:`,
      cache: { beta: 0 },
      controllers: [HostileController],
      providers: [{ provide: APP_INTERCEPTOR, useClass: HttpCacheInterceptor }],
    });
    port = (app.app.getHttpServer().address() as AddressInfo).port;
  });

  it('a response to a request with Authorization is never served to another user, nor one to anonymous', async () => {
    const alice = await rawGet(port, '/h/auth', { authorization: 'Bearer alice' });
    expect([alice.headers['x-cache'], JSON.parse(alice.body)]).toEqual(['BYPASS', { auth: 'Bearer alice' }]);
    const anon = await rawGet(port, '/h/auth');
    expect([anon.headers['x-cache'], JSON.parse(anon.body)]).toEqual(['MISS', { auth: null }]);
    const bob = await rawGet(port, '/h/auth', { authorization: 'Bearer bob' });
    expect([bob.headers['x-cache'], JSON.parse(bob.body)]).toEqual(['BYPASS', { auth: 'Bearer bob' }]);
    const anon2 = await rawGet(port, '/h/auth');
    expect([anon2.headers['x-cache'], JSON.parse(anon2.body)]).toEqual(['HIT', { auth: null }]);
    expect(runs.auth).toBe(3);
  });

  it('a handler that sets a cookie: never stored, the next request gets its own cookie', async () => {
    const a = await rawGet(port, '/h/cookie');
    const b = await rawGet(port, '/h/cookie');
    expect([a.headers['x-cache'], a.headers['set-cookie'], JSON.parse(a.body)]).toEqual([
      'MISS',
      ['sid=s1'],
      { sid: 's1' },
    ]);
    expect([b.headers['x-cache'], b.headers['set-cookie'], JSON.parse(b.body)]).toEqual([
      'MISS',
      ['sid=s2'],
      { sid: 's2' },
    ]);
  });

  it('Vary: Cookie keeps one entry per cookie: a user never gets another cookie’s body', async () => {
    const a1 = await rawGet(port, '/h/vary', { cookie: 'uid=a' });
    const b1 = await rawGet(port, '/h/vary', { cookie: 'uid=b' });
    const none = await rawGet(port, '/h/vary');
    const a2 = await rawGet(port, '/h/vary', { cookie: 'uid=a' });
    const b2 = await rawGet(port, '/h/vary', { cookie: 'uid=b' });
    expect([a1, b1, none, a2, b2].map((r) => [r.headers['x-cache'], JSON.parse(r.body).cookie])).toEqual([
      ['MISS', 'uid=a'],
      ['MISS', 'uid=b'],
      ['MISS', null],
      ['HIT', 'uid=a'],
      ['HIT', 'uid=b'],
    ]);
    expect(runs.vary).toBe(3);
  });

  it('query-string tricks: every distinct URL gets its own answer (reordered, encoded, duplicates, #, long)', async () => {
    const long = 'a'.repeat(8_000);
    const paths = [
      '/h/q?a=1&b=2',
      '/h/q?b=2&a=1',
      '/h/q?x=%41',
      '/h/q?x=A',
      '/h/q?x=1&x=2',
      '/h/q?x=2&x=1',
      '/h/q?x=caf%C3%A9',
      '/h/q?x=%E2%82%AC%00',
      '/h/q?x=%23y',
      '/h/q?x=1#a',
      '/h/q?x=1#b',
      `/h/q?x=${long}1`,
      `/h/q?x=${long}2`,
      '/h/q?x=__proto__&__proto__=1',
      '/h/q?x=*',
    ];
    const first = [];
    for (const p of paths) first.push(await rawGet(port, p));
    const second = [];
    for (const p of paths) second.push(await rawGet(port, p));
    // Express and Fastify see a raw '#' as part of the URL (a client never sends it; a hostile one may).
    for (const [i, p] of paths.entries()) {
      expect([first[i].status, JSON.parse(first[i].body).url]).toEqual([200, p]);
      expect([second[i].status, second[i].headers['x-cache'], JSON.parse(second[i].body).url]).toEqual([200, 'HIT', p]);
    }
    expect(runs.q).toBe(paths.length);
  });

  it('HEAD passes through (no X-Cache) and never stores an empty body that a GET would get', async () => {
    const head = await rawGet(port, '/h/head', {}, 'HEAD');
    expect([head.status, head.headers['x-cache'], head.body]).toEqual([200, undefined, '']);
    const get1 = await rawGet(port, '/h/head');
    const get2 = await rawGet(port, '/h/head');
    expect([get1.headers['x-cache'], JSON.parse(get1.body)]).toEqual(['MISS', { n: 2 }]);
    expect([get2.headers['x-cache'], JSON.parse(get2.body)]).toEqual(['HIT', { n: 2 }]);
  });

  it('a thrown 404 is not stored: the next request runs the handler and its 200 is cached', async () => {
    const r = [await rawGet(port, '/h/flaky'), await rawGet(port, '/h/flaky'), await rawGet(port, '/h/flaky')];
    expect(r.map((x) => x.status)).toEqual([404, 200, 200]);
    expect([r[1].headers['x-cache'], r[2].headers['x-cache']]).toEqual(['MISS', 'HIT']);
    expect([JSON.parse(r[1].body), JSON.parse(r[2].body)]).toEqual([{ n: 2 }, { n: 2 }]);
  });

  // docs/cache.md (HTTP responses by URL): a thrown error "is returned to the caller (X-Cache: MISS) and never stored".
  // Before 2026-12-05 there was no X-Cache header at all on the error response (the interceptor set it only in
  // answer(), which a rejected getOrSet never reaches).
  it('a thrown 404 carries X-Cache: MISS, as docs/cache.md says', async () => {
    const r = await rawGet(port, '/h/flaky');
    expect([r.status, r.headers['x-cache']]).toEqual([404, 'MISS']);
  });

  it('a StreamableFile is sent and never stored: each request reads its own stream', async () => {
    const a = await rawGet(port, '/h/file');
    const b = await rawGet(port, '/h/file');
    expect([a.status, a.headers['x-cache'], a.body, b.status, b.headers['x-cache'], b.body]).toEqual([
      200,
      'MISS',
      'file1',
      200,
      'MISS',
      'file2',
    ]);
  });

  it('a body with toJSON: the hit is the JSON the miss sent, the hidden field never appears', async () => {
    const a = await rawGet(port, '/h/tojson');
    const b = await rawGet(port, '/h/tojson');
    expect([a.headers['x-cache'], a.body, b.headers['x-cache'], b.body]).toEqual([
      'MISS',
      '{"shown":1}',
      'HIT',
      '{"shown":1}',
    ]);
  });

  it.each(['circular', 'bigint'])('a %s body is a 500 every time (never a hang, never stored)', async (what) => {
    const a = await rawGet(port, `/h/${what}`);
    const b = await rawGet(port, `/h/${what}`);
    expect([a.status, b.status]).toEqual([500, 500]);
    expect(b.headers['x-cache']).not.toBe('HIT');
  });

  it('a handler returning null: the hit is answered as the miss was', async () => {
    const a = await rawGet(port, '/h/null');
    const b = await rawGet(port, '/h/null');
    expect([b.status, b.body]).toEqual([a.status, a.body]);
    expect(b.headers['content-type']).toBe(a.headers['content-type']);
  });

  // The raw JSON path (cache.http-interceptor.ts answer(), the 'j' and 'e' branches) set Content-Type to
  // application/json; charset=utf-8 unconditionally, over the route's own @Header('Content-Type', ...), on the miss
  // and the hit. Without the interceptor Express's res.json and Fastify's reply.send keep a Content-Type already set;
  // so does the cache now (setJsonType).
  it('a route declaring its own JSON Content-Type (@Header) keeps it on the miss and the hit', async () => {
    const a = await rawGet(port, '/h/ctype');
    const b = await rawGet(port, '/h/ctype');
    expect([a.headers['x-cache'], a.headers['content-type'], a.body]).toEqual([
      'MISS',
      expect.stringMatching(/^application\/vnd\.api\+json/),
      '{"data":[]}',
    ]);
    expect([b.headers['x-cache'], b.headers['content-type'], b.body]).toEqual([
      'HIT',
      expect.stringMatching(/^application\/vnd\.api\+json/),
      '{"data":[]}',
    ]);
  });

  // Without the cache, Nest sends a Buffer with res.json on Express (JSON of the Buffer) and as raw bytes on Fastify.
  // The cache stored it as JSON, so Fastify's miss and hit were {"type":"Buffer","data":[...]}: bytes are not stored
  // now (each request runs the handler, MISS), and the platform sends them as it would without the cache.
  it('a Buffer body: each response is what the platform sends without the cache, never stored', async () => {
    const expected =
      platform === 'fastify'
        ? ['raw-bytes', 'application/octet-stream']
        : [JSON.stringify(Buffer.from('raw-bytes')), 'application/json; charset=utf-8'];
    const a = await rawGet(port, '/h/buf');
    const b = await rawGet(port, '/h/buf');
    expect([a.status, a.headers['x-cache'], a.body, a.headers['content-type']]).toEqual([200, 'MISS', ...expected]);
    expect([b.status, b.headers['x-cache'], b.body, b.headers['content-type']]).toEqual([200, 'MISS', ...expected]);
  });
});

describe('HttpCacheInterceptor ETag on express', () => {
  it('If-None-Match of a stored response gets a 304 on a hit, another ETag a 200 with the body', async () => {
    const app = await createToolkitApp({
      http: true,
      keyPrefix: `rtk-he${rand()}:`,
      controllers: [HostileController],
      providers: [{ provide: APP_INTERCEPTOR, useClass: HttpCacheInterceptor }],
    });
    const port = (app.app.getHttpServer().address() as AddressInfo).port;
    const a = await rawGet(port, '/h/tojson');
    const etag = String(a.headers.etag);
    expect(etag).toMatch(/^W\/"/);
    const b = await rawGet(port, '/h/tojson', { 'if-none-match': etag });
    expect([b.status, b.headers['x-cache'], b.body]).toEqual([304, 'HIT', '']);
    const c = await rawGet(port, '/h/tojson', { 'if-none-match': 'W/"other"' });
    expect([c.status, c.body, c.headers.etag]).toEqual([200, '{"shown":1}', etag]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// CacheService
// ---------------------------------------------------------------------------------------------------------------

describe.each(['single', 'cluster'] as const)('CacheService against hostile use on %s', (target) => {
  it('1,000 concurrent getOrSet of one key over two instances: exactly one loader call', async () => {
    const keyPrefix = `rtk-hs${rand()}:`;
    // 1,000 calls at once on a busy CI box can pass the default 1 s, and a read that times out loads: no fault here
    const slow = { commandTimeout: 10_000 };
    const [a, b] = await Promise.all([cacheApp(target, keyPrefix, slow), cacheApp(target, keyPrefix, slow)]);
    let loads = 0;
    const loader = async () => {
      loads++;
      await sleep(50);
      return { v: 'x' };
    };
    const all = await Promise.all(
      Array.from({ length: 1_000 }, (_, i) => (i % 2 ? a : b).getOrSet('hot', loader, { ttl: 60_000 })),
    );
    expect(loads).toBe(1);
    expect(all.every((v) => v.v === 'x')).toBe(true);
  });

  it('hostile keys round-trip exactly and stay apart; glob tags invalidate only themselves', async () => {
    const keyPrefix = `rtk-hk${rand()}:`;
    const cache = await cacheApp(target, keyPrefix);
    const keys = ['{', '}', '{a}', ':', 'a:b', 'a%3Ab', 'k'.repeat(1_000), '\ud83d\ude00', '__proto__', 'constructor'];
    keys.push('*', '?', '[a]', 'a', 'b', '%', '%7B', 'a b', 'é', 'e\u0301');
    // refused before any Redis command, by every call, with a typed error
    for (const bad of ['\n', 'a\nb', 'k'.repeat(10_000), '\ud800', 'x\udfffy', '']) {
      expect(await errorOf(() => cache.set(bad, 1))).toBeInstanceOf(InvalidKeyError);
      expect(await errorOf(() => cache.getOrSet(bad, () => 1))).toBeInstanceOf(InvalidKeyError);
      expect(await errorOf(() => cache.get(bad))).toBeInstanceOf(InvalidKeyError);
      expect(await errorOf(() => cache.del(bad))).toBeInstanceOf(InvalidKeyError);
      expect(await errorOf(() => cache.set('fine', 1, { tags: [bad] }))).toBeInstanceOf(RedisToolkitError);
    }
    const tags = ['*', '?', '[ab]', 'a', 'ab', 'b', '{x}', '__proto__', 'a*'];
    await Promise.all(keys.map((k, i) => cache.set(k, { i }, { tags: [tags[i % tags.length]] })));
    expect(await Promise.all(keys.map((k) => cache.get(k)))).toEqual(keys.map((_, i) => ({ i })));
    expect(await cache.mget(keys)).toEqual(keys.map((_, i) => ({ i })));
    // Each glob-looking tag takes only its own entries.
    for (const tag of ['*', '?', '[ab]', 'a*']) {
      const before = await Promise.all(keys.map((k) => cache.has(k)));
      await cache.invalidateTags(tag);
      const after = await Promise.all(keys.map((k) => cache.has(k)));
      const expected = keys.map((_, i) => before[i] && tags[i % tags.length] !== tag);
      expect(after).toEqual(expected);
    }
    // What is left: the entries of the plain tags.
    const left = keys.filter((_, i) => !['*', '?', '[ab]', 'a*'].includes(tags[i % tags.length]));
    expect(await Promise.all(left.map((k) => cache.has(k)))).toEqual(left.map(() => true));
    expect(left.length).toBeGreaterThan(5);
  });

  it('clear() deletes only its own namespace, also with glob characters in the prefix', async () => {
    const base = `rtk-hc${rand()}`;
    // '*' and '?' and '[' in our prefix must not match the neighbours' keys
    const ours = await cacheApp(target, `${base}*:`);
    const star = await cacheApp(target, `${base}x:`);
    const q = await cacheApp(target, `${base}?[:`);
    await Promise.all([ours.set('k', 1), star.set('k', 2), q.set('k', 3), star.set('t', 4, { tags: ['tag'] })]);
    const foreign = foreignClient(target);
    await foreign.set(`${base}*:other`, 'not the cache');
    await foreign.set(`${base}*:cachex`, 'not the cache either');
    // a pattern of everything stays in our namespace too
    await ours.set('k2', 5);
    expect(await ours.invalidatePattern('*')).toBe(2);
    await ours.set('k', 1);
    const removed = await ours.clear();
    expect(removed).toBe(1);
    expect(await ours.get('k')).toBeUndefined();
    expect([await star.get('k'), await q.get('k'), await star.get('t')]).toEqual([2, 3, 4]);
    expect([await foreign.get(`${base}*:other`), await foreign.get(`${base}*:cachex`)]).toEqual([
      'not the cache',
      'not the cache either',
    ]);
    expect(await q.clear()).toBe(1);
    expect([await star.get('k'), await star.get('t')]).toEqual([2, 4]);
  });

  it('get/mget of one key in one turn (one MGET) hand each caller its own copy', async () => {
    const cache = await cacheApp(target, `rtk-hm${rand()}:`);
    await cache.set('m', { x: 1, list: [1] });
    type V = { x: number; list: number[] };
    const [a, b, [c]] = await Promise.all([cache.get<V>('m'), cache.get<V>('m'), cache.mget<V>(['m'])]);
    if (a === undefined || b === undefined || c === undefined) throw new Error('no value');
    expect(a).not.toBe(b);
    expect(b).not.toBe(c);
    a.x = 2;
    a.list.push(2);
    expect([b, c, await cache.get('m')]).toEqual([
      { x: 1, list: [1] },
      { x: 1, list: [1] },
      { x: 1, list: [1] },
    ]);
  });

  it('L1 never answers get/has/ttl with a stale value; getOrSet serves it as stale and refreshes once', async () => {
    const keyPrefix = `rtk-hz${rand()}:`;
    const l1 = { max: 10, ttl: 60_000 };
    const [a, b] = await Promise.all([
      cacheApp(target, keyPrefix, { cache: { l1 } }),
      cacheApp(target, keyPrefix, { cache: { l1 } }),
    ]);
    await a.set('s', 'v', { ttl: 150, staleTtl: 60_000 });
    await a.set('soft', 'w', { ttl: 60_000, staleTtl: 60_000, tags: ['t'] });
    expect([await a.get('s'), await b.get('s'), await b.get('soft')]).toEqual(['v', 'v', 'w']);
    await sleep(250);
    expect([await a.get('s'), await b.get('s'), await a.has('s'), await b.ttl('s')]).toEqual([
      undefined,
      undefined,
      false,
      undefined,
    ]);
    let loads = 0;
    const loader = async () => `v${++loads}`;
    expect(await b.getOrSetWithStatus('s', loader)).toEqual({ value: 'v', status: 'stale' });
    expect(await waitFor(async () => (await a.get('s')) === 'v1', L1_WAIT)).toBe(true);
    expect(loads).toBe(1);
    // a soft invalidation on one instance: the other's L1 stops answering get at once
    await a.invalidateTags('t', { soft: true });
    expect(await waitFor(async () => (await b.get('soft')) === undefined, L1_WAIT)).toBe(true);
    expect(await b.getOrSetWithStatus('soft', loader)).toEqual({ value: 'w', status: 'stale' });
  });

  it('WRONGTYPE at one key: read as a miss and overwritten by getOrSet; other keys untouched', async () => {
    const keyPrefix = `rtk-hw${rand()}:`;
    const cache = await cacheApp(target, keyPrefix);
    await cache.set('other', 'fine');
    const foreign = foreignClient(target);
    await foreign.lpush(`${keyPrefix}cache:k`, 'a list');
    expect(await cache.get('k')).toBeUndefined();
    expect(await cache.has('k')).toBe(false);
    expect(await cache.getOrSet('k', () => 'loaded')).toBe('loaded');
    expect(await cache.get('k')).toBe('loaded');
    expect(await foreign.type(`${keyPrefix}cache:k`)).toBe('string');
    expect(await cache.get('other')).toBe('fine');
  });

  it('loaders that throw, return undefined, hang past loadTimeout or re-enter their own key', async () => {
    const keyPrefix = `rtk-hl${rand()}:`;
    const cache = await cacheApp(target, keyPrefix, { cache: { loadTimeout: 300, lockTtl: 2_000, lockWait: 1_000 } });
    let n = 0;
    const boom = new Error('boom');
    const thrown = await Promise.allSettled(
      Array.from({ length: 20 }, () =>
        cache.getOrSet('t', () => {
          n++;
          throw boom;
        }),
      ),
    );
    expect(n).toBe(1);
    expect(thrown.every((r) => r.status === 'rejected' && r.reason === boom)).toBe(true);
    expect(await cache.getOrSet('t', () => 'second')).toBe('second');

    expect(await cache.getOrSet('u', () => undefined)).toBeUndefined();
    expect(await cache.has('u')).toBe(false);
    expect(await cache.getOrSet('u', () => 'now')).toBe('now');

    const t0 = Date.now();
    const hung = await errorOf(() => cache.getOrSet('h', () => new Promise<string>(() => undefined)));
    expect(hung).toBeInstanceOf(CacheLoadTimeoutError);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(await cache.getOrSet('h', () => 'after')).toBe('after');

    // re-entrancy: the loader asks for its own key. A typed error or a value, within the timeouts: never a deadlock.
    const reentrant = await settleWithin(
      cache
        .getOrSet('r', () => cache.getOrSet('r', () => 'inner'))
        .then(
          (v) => ({ v }),
          (e: unknown) => ({ e }),
        ),
      5_000,
      'deadlock' as const,
    );
    expect(reentrant).not.toBe('deadlock');
    if (typeof reentrant === 'object' && 'e' in reentrant) expect(reentrant.e).toBeInstanceOf(RedisToolkitError);
    else expect(reentrant).toEqual({ v: 'inner' });
  });

  it('a huge value (8 MB string, 1 MB object) round-trips exactly; no size cap truncates it', async () => {
    const cache = await cacheApp(target, `rtk-hb${rand()}:`);
    const big = `${'x'.repeat(8 * 1024 * 1024 - 1)}é`;
    const obj = { list: Array.from({ length: 100_000 }, (_, i) => i) };
    await cache.set('big', big);
    expect(await cache.getOrSet('obj', () => obj)).toBe(obj);
    const [gotBig, gotObj] = await Promise.all([cache.get<string>('big'), cache.get('obj')]);
    expect(gotBig === big).toBe(true);
    expect(gotObj).toEqual(obj);
  });

  it('unserialisable values are typed errors and write nothing', async () => {
    const keyPrefix = `rtk-hv${rand()}:`;
    const cache = await cacheApp(target, keyPrefix);
    const circ: Record<string, unknown> = {};
    circ.self = circ;
    await expect(cache.set('c', circ)).rejects.toBeInstanceOf(SerializationError);
    await expect(cache.set('b', { n: 1n })).rejects.toBeInstanceOf(SerializationError);
    await expect(cache.getOrSet('g', () => ({ n: 2n }))).rejects.toBeInstanceOf(SerializationError);
    expect(await Promise.all(['c', 'b', 'g'].map((k) => cache.has(k)))).toEqual([false, false, false]);
  });

  it('L1 with tracking: a foreign SET of garbage and a foreign DEL are never served stale from L1', async () => {
    const keyPrefix = `rtk-ht${rand()}:`;
    const l1 = { max: 100, ttl: 60_000, invalidation: 'tracking' };
    const cache = await cacheApp(target, keyPrefix, { cache: { l1 } });
    await cache.set('k', 'v1');
    await cache.set('d', 'v2');
    expect([await cache.get('k'), await cache.get('d')]).toEqual(['v1', 'v2']);
    const foreign = foreignClient(target);
    await foreign.set(`${keyPrefix}cache:k`, 'garbage with no header');
    await foreign.del(`${keyPrefix}cache:d`);
    expect(await waitFor(async () => (await cache.get('k')) === undefined, L1_WAIT)).toBe(true);
    expect(await waitFor(async () => (await cache.get('d')) === undefined, L1_WAIT)).toBe(true);
  });
});

describe.each(['bus', 'tracking'] as const)('two instances with L1 (%s) on single', (invalidation) => {
  it('invalidateTags, del, invalidatePattern and clear on one are seen by the other’s L1', async () => {
    const keyPrefix = `rtk-h2${rand()}:`;
    const l1 = { max: 100, ttl: 60_000, invalidation };
    const [a, b] = await Promise.all([
      cacheApp('single', keyPrefix, { cache: { l1 } }),
      cacheApp('single', keyPrefix, { cache: { l1 } }),
    ]);
    await Promise.all([
      a.set('t*', 1, { tags: ['[x]'] }),
      a.set('x', 2, { tags: ['x'] }),
      a.set('d', 3),
      a.set('p:1', 4),
      a.set('q', 5),
    ]);
    expect(await b.mget(['t*', 'x', 'd', 'p:1', 'q'])).toEqual([1, 2, 3, 4, 5]);
    await a.invalidateTags('[x]');
    await a.del('d');
    await a.invalidatePattern('p:*');
    const gone = async (k: string) => waitFor(async () => (await b.get(k)) === undefined, L1_WAIT);
    expect([await gone('t*'), await gone('d'), await gone('p:1')]).toEqual([true, true, true]);
    expect(await b.get('x')).toBe(2);
    await a.clear();
    expect([await gone('x'), await gone('q')]).toEqual([true, true]);
  });
});

describe('CacheService on a private server', () => {
  it('the tracking connection killed with a foreign write: L1 never serves the old value', async () => {
    const server = trackForCleanup(await startRedisServer());
    const keyPrefix = `rtk-hk${rand()}:`;
    const cache = await cacheApp({ url: server.url }, keyPrefix, {
      cache: { l1: { max: 100, ttl: 60_000, invalidation: 'tracking' } },
    });
    await cache.set('k', 'v1');
    expect(await cache.get('k')).toBe('v1');
    const admin = trackForCleanup(new Redis(server.url));
    const list = String(await admin.client('LIST'));
    const id = /id=(\d+) .*name=(\S+)/
      .exec(list.split('\n').find((l) => l.includes(`name=${TRACKING_CONNECTION_NAME}`)) ?? '')
      ?.at(1);
    expect(id).toMatch(/^\d+$/);
    const replies = await admin.multi().client('KILL', 'ID', String(id)).del(`${keyPrefix}cache:k`).exec();
    expect(replies?.map(([err]) => err)).toEqual([null, null]);
    expect(await waitFor(async () => (await cache.get('k')) === undefined, L1_WAIT)).toBe(true);
  });

  it('Redis paused mid-load: the loaded value is served, counted; invalidations throw typed; resumed: caching again', async () => {
    const server = trackForCleanup(await startRedisServer());
    const cache = await cacheApp({ url: server.url }, `rtk-hp${rand()}:`, { commandTimeout: 300 });
    const errorsBefore = cache.stats().errors;
    const value = await cache.getOrSet('k', async () => {
      server.pause();
      await sleep(20);
      return 'loaded';
    });
    try {
      expect(value).toBe('loaded');
      expect(cache.stats().errors).toBeGreaterThan(errorsBefore);
      await expect(cache.invalidateTags('t')).rejects.toBeInstanceOf(RedisUnavailableError);
      await expect(cache.del('k')).rejects.toBeInstanceOf(RedisUnavailableError);
      expect(await cache.get('k')).toBeUndefined();
    } finally {
      server.resume();
    }
    // caching resumes by itself: a getOrSet is stored again
    const stored = async () => {
      await cache.getOrSet('k2', () => 'x').catch(() => undefined);
      return (await cache.get('k2')) === 'x';
    };
    expect(await waitFor(stored, 5_000)).toBe(true);
  });

  it('Redis killed and restarted mid-load: the value is served, then caching resumes', async () => {
    const server = trackForCleanup(await startRedisServer());
    const cache = await cacheApp({ url: server.url }, `rtk-hr${rand()}:`, { commandTimeout: 300 });
    const value = await cache.getOrSet('k', async () => {
      await server.kill();
      return 'loaded';
    });
    expect(value).toBe('loaded');
    expect(await cache.get('k')).toBeUndefined();
    await expect(cache.set('k', 'v')).resolves.toBeUndefined();
    await server.restart();
    const stored = async () => {
      await cache.getOrSet('k', () => 'again').catch(() => undefined);
      return (await cache.get('k')) === 'again';
    };
    expect(await waitFor(stored, 5_000)).toBe(true);
  });

  it('OOM under noeviction: set throws RedisReplyError, hits are still served; SCRIPT FLUSH: tags still work', async () => {
    const server = trackForCleanup(await startRedisServer());
    const keyPrefix = `rtk-ho${rand()}:`;
    const cache = await cacheApp({ url: server.url }, keyPrefix);
    await cache.set('kept', 'v', { tags: ['t'] });
    await cache.set('soft', 'w', { tags: ['s'], staleTtl: 60_000 });
    const admin = trackForCleanup(new Redis(server.url));
    await admin.call('SCRIPT', 'FLUSH');
    await cache.invalidateTags('s', { soft: true });
    expect([await cache.get('soft'), await cache.get('kept')]).toEqual([undefined, 'v']);
    // 2 MB of data, then maxmemory below what is used (noeviction): every write is refused with OOM from now on
    for (let i = 0; i < 8; i++) await admin.set(`filler${i}`, 'x'.repeat(256 * 1024));
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', '1mb');
    expect(await errorOf(() => admin.set('plain', 'x'))).toEqual(
      expect.objectContaining({ message: expect.stringMatching(/^OOM/) }),
    );
    await expect(cache.set('new', 'x'.repeat(1_000))).rejects.toBeInstanceOf(RedisReplyError);
    await expect(cache.getOrSet('new2', () => 'y')).rejects.toBeInstanceOf(RedisReplyError);
    expect(await cache.get('kept')).toBe('v');
  });
});
