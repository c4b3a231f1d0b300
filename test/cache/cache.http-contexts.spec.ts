/**
 * HttpCacheInterceptor outside a plain GET route (nest-stack.hostile.spec.ts found each): a Socket.IO handler with
 * cache decorators passed through without a word (now: a warning once per handler naming why and what to use); an
 * `@Sse` route was cached as a GET (its last event stored and sent to every client, a never-ending stream held the
 * URL: now passed through, never stored); under header, media-type or custom versioning every version of a URL shared
 * one entry (now the route's version is in the key; the key of an app without versioning, and of URI versioning, is
 * unchanged). Real Redis, Express and Fastify, a real Socket.IO client.
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { get as httpGet, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  Controller,
  Get,
  type INestApplication,
  type MessageEvent,
  Sse,
  UseInterceptors,
  Version,
  VersioningType,
  type VersioningOptions,
} from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import { SubscribeMessage, WebSocketGateway } from '@nestjs/websockets';
import { type Observable, of, Subject } from 'rxjs';
import { io, type Socket as ClientSocket } from 'socket.io-client';
import request from 'supertest';
import { CacheService } from '../../lib/index.js';
import { CacheKey, CacheTTL, HttpCacheInterceptor } from '../../lib/advanced.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, type Platform } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const prefix = (): string => `rtk-ctx-${randomUUID().slice(0, 8)}:`;
const runs = new Map<string, number>();
const bump = (key: string): number => {
  const n = (runs.get(key) ?? 0) + 1;
  runs.set(key, n);
  return n;
};

async function boot(platform: Platform, options: Parameters<typeof createToolkitApp>[0]) {
  const app = await createToolkitApp({ keyPrefix: prefix(), platform, http: true, ...options });
  return { app, server: app.app.getHttpServer() as Server };
}

// ---------------------------------------------------------------------------------------------------------------
// A: handlers that are not HTTP
// ---------------------------------------------------------------------------------------------------------------

@WebSocketGateway({ namespace: '/cache-contexts' })
@UseInterceptors(HttpCacheInterceptor)
class HistoryGateway {
  static id = '';
  @SubscribeMessage('history')
  @CacheTTL(60_000)
  history(): number {
    return bump(`history:${HistoryGateway.id}`);
  }

  @SubscribeMessage('named')
  @CacheKey('chat-names')
  named(): number {
    return bump(`named:${HistoryGateway.id}`);
  }

  @SubscribeMessage('ping')
  ping(): number {
    return bump(`ping:${HistoryGateway.id}`);
  }
}

/** A gateway with no cache decorator at all, under a global HttpCacheInterceptor. */
@WebSocketGateway({ namespace: '/cache-contexts-plain' })
class PlainGateway {
  @SubscribeMessage('echo')
  echo(): string {
    return 'echo';
  }
}

describe.each(PLATFORMS)('HttpCacheInterceptor on a Socket.IO gateway on %s', (platform) => {
  const sockets: ClientSocket[] = [];
  afterEach(() => {
    for (const s of sockets.splice(0)) s.disconnect();
  });

  async function connect(server: Server, namespace: string): Promise<ClientSocket> {
    const { port } = server.address() as AddressInfo;
    const socket = io(`http://127.0.0.1:${port}${namespace}`, { transports: ['websocket'], reconnection: false });
    sockets.push(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    });
    return socket;
  }
  const ask = (socket: ClientSocket, event: string) =>
    new Promise<unknown>((resolve) => socket.emit(event, {}, (answer: unknown) => resolve(answer)));

  it('a handler with @CacheTTL / @CacheKey runs on every message and a warning once per handler says why and what to use', async () => {
    HistoryGateway.id = randomUUID();
    const { warnings, logger } = recordingLogger();
    const { server } = await boot(platform, { providers: [HistoryGateway, PlainGateway], logger });
    const socket = await connect(server, '/cache-contexts');
    const answers = [];
    for (const event of ['history', 'history', 'named', 'named', 'ping', 'history']) {
      answers.push(await ask(socket, event));
    }
    // the handler ran per message: nothing cached, nothing stored
    expect(answers).toEqual([1, 2, 1, 2, 1, 3]);
    const ours = warnings.filter((w) => w.includes('HistoryGateway.'));
    // before: no warning at all
    expect(ours.map((w) => w.match(/HistoryGateway\.\w+/)?.[0])).toEqual([
      'HistoryGateway.history',
      'HistoryGateway.named',
    ]);
    for (const w of ours) {
      expect(w).toMatch(/"ws" handler/);
      expect(w).toMatch(/HTTP GET routes only/);
      expect(w).toMatch(/@Cacheable/);
      expect(w).toMatch(/CacheService\.getOrSet/);
    }
    expect(ours[0]).toMatch(/@CacheTTL/);
    expect(ours[1]).toMatch(/@CacheKey/);
  });

  it('a gateway without cache decorators under a global HttpCacheInterceptor: answered, and not a word', async () => {
    const { warnings, logger } = recordingLogger();
    const { server } = await boot(platform, {
      providers: [PlainGateway, { provide: APP_INTERCEPTOR, useClass: HttpCacheInterceptor }],
      logger,
    });
    const socket = await connect(server, '/cache-contexts-plain');
    expect([await ask(socket, 'echo'), await ask(socket, 'echo')]).toEqual(['echo', 'echo']);
    expect(warnings.filter((w) => /HttpCacheInterceptor|PlainGateway/.test(w))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// B: @Sse routes
// ---------------------------------------------------------------------------------------------------------------

@Controller('ctx-sse')
class EventsController {
  static id = '';
  static open: Subject<MessageEvent> | undefined;

  @Sse('three')
  three(): Observable<MessageEvent> {
    const n = bump(`sse:${EventsController.id}`);
    return of({ data: `a${n}` }, { data: `b${n}` }, { data: `c${n}` });
  }

  /** A stream that stays open (the usual SSE): the test ends it. */
  @Sse('open')
  @CacheTTL(60_000)
  open(): Observable<MessageEvent> {
    EventsController.open = new Subject<MessageEvent>();
    return EventsController.open;
  }
}

/** Reads a GET with node:http: status, headers and the body; `onData` sees the body so far as each chunk comes. */
function getStream(
  server: Server,
  path: string,
  onData?: (body: string) => void,
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  const { port } = server.address() as AddressInfo;
  return new Promise((resolve, reject) => {
    httpGet({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
        onData?.(body);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    }).on('error', reject);
  });
}

describe.each(PLATFORMS)('HttpCacheInterceptor (global) and @Sse routes on %s', (platform) => {
  const bootSse = async () => {
    EventsController.id = randomUUID();
    return boot(platform, {
      controllers: [EventsController],
      providers: [{ provide: APP_INTERCEPTOR, useClass: HttpCacheInterceptor }],
    });
  };

  it('every event reaches every client, the handler runs per request, no X-Cache, nothing stored', async () => {
    const { app, server } = await bootSse();
    const first = await getStream(server, '/ctx-sse/three');
    const second = await getStream(server, '/ctx-sse/three');
    // before: one event (the last), the second from the cache, the handler run once
    expect(first.body).toMatch(/data: a1\n[\s\S]*data: b1\n[\s\S]*data: c1\n/);
    expect(second.body).toMatch(/data: a2\n[\s\S]*data: b2\n[\s\S]*data: c2\n/);
    expect([first.status, second.status]).toEqual([200, 200]);
    expect([first.headers['x-cache'], second.headers['x-cache']]).toEqual([undefined, undefined]);
    expect(runs.get(`sse:${EventsController.id}`)).toBe(2);
    expect(await app.get(CacheService).get('http:/ctx-sse/three')).toBeUndefined();
  });

  it('an open stream (with @CacheTTL) sends each event as it comes, before it ends', async () => {
    const { app, server } = await bootSse();
    // each event is sent only once the client has the previous one. Before: the interceptor waited for the end, the
    // client got no event until the cache's load timed out (~10 s), then one error event (`data: Gateway Timeout`)
    const seen: string[] = [];
    const done = getStream(server, '/ctx-sse/open', (body) => {
      const events = body.match(/data: \w+/g) ?? [];
      if (events.length > seen.length) {
        seen.push(...events.slice(seen.length));
        if (seen.length === 1) EventsController.open?.next({ data: 'second' });
        else EventsController.open?.complete();
      }
    });
    // the handler has run once the interceptor subscribed: wait for its Subject, then send the first event
    await new Promise<void>((resolve) => {
      const poll = () => (EventsController.open?.observed ? resolve() : setImmediate(poll));
      poll();
    });
    EventsController.open?.next({ data: 'first' });
    const res = await done;
    expect(seen).toEqual(['data: first', 'data: second']);
    expect(res.headers['x-cache']).toBeUndefined();
    expect(await app.get(CacheService).get('http:/ctx-sse/open')).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------------------------
// C: versions of one URL
// ---------------------------------------------------------------------------------------------------------------

@Controller('ctx-items')
@UseInterceptors(HttpCacheInterceptor)
class VersionedItems {
  static id = '';
  @Get()
  @Version('1')
  @CacheTTL(60_000)
  v1() {
    return { version: 1, n: bump(`v1:${VersionedItems.id}`) };
  }

  @Get()
  @Version(['2', '3'])
  @CacheTTL(60_000)
  v2() {
    return { version: 2, n: bump(`v2:${VersionedItems.id}`) };
  }
}

/** `current` has no @Version: it serves the app's defaultVersion. */
@Controller('ctx-default')
@UseInterceptors(HttpCacheInterceptor)
class DefaultedItems {
  static id = '';
  @Get()
  @CacheTTL(60_000)
  current() {
    return { current: bump(`current:${DefaultedItems.id}`) };
  }

  @Get()
  @Version('1')
  @CacheTTL(60_000)
  legacy() {
    return { legacy: bump(`legacy:${DefaultedItems.id}`) };
  }
}

@Controller('ctx-plain')
@UseInterceptors(HttpCacheInterceptor)
class UnversionedItems {
  @Get()
  @CacheTTL(60_000)
  list() {
    return { plain: true };
  }
}

const SCHEMES: [string, VersioningOptions, (v: string) => Record<string, string>][] = [
  ['header', { type: VersioningType.HEADER, header: 'X-API-Version' }, (v) => ({ 'X-API-Version': v })],
  ['media-type', { type: VersioningType.MEDIA_TYPE, key: 'v=' }, (v) => ({ Accept: `application/json;v=${v}` })],
  [
    'custom',
    {
      type: VersioningType.CUSTOM,
      extractor: (req: unknown) => String((req as { headers: Record<string, string> }).headers['x-ver'] ?? ''),
    },
    (v) => ({ 'x-ver': v }),
  ],
];

describe.each(PLATFORMS)('HttpCacheInterceptor and versioning on %s', (platform) => {
  it.each(SCHEMES)(
    '%s versioning: each version of a URL its own entry, a HIT of its own',
    async (_s, versioning, headers) => {
      VersionedItems.id = randomUUID();
      const { app, server } = await boot(platform, {
        controllers: [VersionedItems],
        beforeInit: (a: INestApplication) => {
          a.enableVersioning(versioning);
        },
      });
      const http = request(server);
      const answers = [];
      for (const v of ['1', '2', '1', '2', '3']) {
        const res = await http.get('/ctx-items').set(headers(v));
        answers.push([v, res.body, res.headers['x-cache']]);
      }
      // before: [ '2', { version: 1, n: 1 }, 'HIT' ] for the second request, and version 1 to every version after
      expect(answers).toEqual([
        ['1', { version: 1, n: 1 }, 'MISS'],
        ['2', { version: 2, n: 1 }, 'MISS'],
        ['1', { version: 1, n: 1 }, 'HIT'],
        ['2', { version: 2, n: 1 }, 'HIT'],
        // one handler for versions 2 and 3: one entry for both
        ['3', { version: 2, n: 1 }, 'HIT'],
      ]);
      // the key: the URL, then the version(s) of the handler; a pattern of the URL reaches every version
      const cache = app.get(CacheService);
      expect(await cache.get('http:/ctx-items#version:1')).toBeDefined();
      expect(await cache.get('http:/ctx-items#version:2,3')).toBeDefined();
      expect(await cache.invalidatePattern('http:/ctx-items*')).toBe(2);
    },
  );

  it('header versioning with a defaultVersion: a handler without @Version is keyed as that version', async () => {
    DefaultedItems.id = randomUUID();
    const { app, server } = await boot(platform, {
      controllers: [DefaultedItems],
      beforeInit: (a: INestApplication) => {
        a.enableVersioning({ type: VersioningType.HEADER, header: 'X-API-Version', defaultVersion: '2' });
      },
    });
    const http = request(server);
    const answers = [];
    for (const v of ['2', '1', '2', '1']) {
      const res = await http.get('/ctx-default').set('X-API-Version', v);
      answers.push([res.body, res.headers['x-cache']]);
    }
    expect(answers).toEqual([
      [{ current: 1 }, 'MISS'],
      [{ legacy: 1 }, 'MISS'],
      [{ current: 1 }, 'HIT'],
      [{ legacy: 1 }, 'HIT'],
    ]);
    expect(await app.get(CacheService).get('http:/ctx-default#version:2')).toBeDefined();
  });

  it('the key is unchanged without versioning (`http:` + URL) and with URI versioning (the URL has the version)', async () => {
    const plain = await boot(platform, { controllers: [UnversionedItems] });
    expect((await request(plain.server).get('/ctx-plain?a=1')).headers['x-cache']).toBe('MISS');
    expect(await plain.app.get(CacheService).get('http:/ctx-plain?a=1')).toBeDefined();

    VersionedItems.id = randomUUID();
    const uri = await boot(platform, {
      controllers: [VersionedItems],
      beforeInit: (a: INestApplication) => {
        a.enableVersioning({ type: VersioningType.URI });
      },
    });
    expect((await request(uri.server).get('/v1/ctx-items')).body).toEqual({ version: 1, n: 1 });
    expect(await uri.app.get(CacheService).get('http:/v1/ctx-items')).toBeDefined();
  });
});
