/**
 * HttpCacheInterceptor and what the platform or an outer interceptor does to a body after the cache: Fastify's
 * preSerialization hooks, response schemas and reply serializers, Express middleware wrapping res.json, and a class
 * instance behind an interceptor outside the cache (ClassSerializerInterceptor). The stored JSON text is sent as it is
 * (raw) only where none of them would see the value; a class instance behind an outer interceptor is never stored.
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import {
  type CallHandler,
  Controller,
  type ExecutionContext,
  Get,
  Injectable,
  type INestApplication,
  type NestInterceptor,
  type Type,
  UseInterceptors,
} from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import { RouteSchema } from '@nestjs/platform-fastify';
import { Redis } from 'ioredis';
import { map, type Observable } from 'rxjs';
import request from 'supertest';
import { HttpCacheInterceptor, KeyBuilder } from '../../lib/advanced.js';
import { trackForCleanup } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, type Platform } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const runs = new Map<string, number>();
const bump = (name: string): number => {
  const n = (runs.get(name) ?? 0) + 1;
  runs.set(name, n);
  return n;
};
beforeEach(() => runs.clear());

interface Booted {
  http: ReturnType<typeof request>;
  /** The raw Redis value of the entry of a URL, null when there is none. */
  entry(url: string): Promise<string | null>;
  warnings: string[];
}

async function boot(
  platform: Platform,
  controllers: Type<unknown>[],
  beforeInit?: (app: INestApplication) => unknown,
  providers: unknown[] = [],
  keyPrefix = `rtk-hooks-${randomUUID().slice(0, 8)}:`,
): Promise<Booted> {
  const { warnings, logger } = recordingLogger();
  const { app } = await createToolkitApp({
    platform,
    http: true,
    keyPrefix,
    controllers,
    providers: providers as never[],
    logger,
    beforeInit: async (a) => void (await beforeInit?.(a)),
  });
  const redis = trackForCleanup(new Redis(sharedServers().single.url));
  return {
    http: request(app.getHttpServer() as Server),
    entry: (url) => redis.get(`${keyPrefix}cache:${KeyBuilder.escape(`http:${url}`)}`),
    warnings,
  };
}

/** Two requests of one URL: [X-Cache, body] of each. */
async function twice(http: Booted['http'], url: string, header?: [string, string][]): Promise<unknown[]> {
  const out: unknown[] = [];
  for (const headers of [header?.[0], header?.[1]]) {
    const req = http.get(url);
    if (headers !== undefined) req.set(headers[0], headers[1]);
    const res = await req.expect(200);
    out.push(res.headers['x-cache'], res.body);
  }
  return out;
}

type Hook = (req: unknown, reply: unknown, payload: unknown, done: (err: null, value: unknown) => void) => void;
interface FastifyLike {
  addHook(name: 'preSerialization', hook: Hook): unknown;
  addHook(name: 'onRoute', hook: (opts: { url: string; preSerialization?: Hook[] }) => void): unknown;
  addHook(
    name: 'preHandler',
    hook: (
      req: { headers: Record<string, string> },
      reply: { serializer(fn: (p: unknown) => string): unknown },
      done: () => void,
    ) => void,
  ): unknown;
  setReplySerializer(fn: (payload: unknown) => string): unknown;
}
const fastify = (app: INestApplication): FastifyLike => app.getHttpAdapter().getInstance() as FastifyLike;
const envelope: Hook = (_req, _reply, payload, done) => done(null, { data: payload });

const SECRET = { id: 'a1', n: 1, passwordHash: '$argon2id$secret-hash' };

@Controller('hooks')
@UseInterceptors(HttpCacheInterceptor)
class HooksController {
  @Get('hooked')
  hooked() {
    return { n: bump('hooked') };
  }

  @Get('plain')
  plain() {
    return { n: bump('plain') };
  }

  /** One handler, two Fastify routes (each its own context: hooks, schema). */
  @Get(['two/bare', 'two/hooked'])
  two() {
    return { n: bump('two') };
  }

  /** A schema that leaves passwordHash out and writes n as a string (fast-json-stringify coerces it). */
  @Get('schema')
  @RouteSchema({
    response: { '2xx': { type: 'object', properties: { id: { type: 'string' }, n: { type: 'string' } } } },
  })
  schema() {
    bump('schema');
    return { ...SECRET };
  }

  /** A schema per content type: Fastify picks one per reply. */
  @Get('typed')
  @RouteSchema({
    response: {
      200: { content: { 'application/json': { schema: { type: 'object', properties: { id: { type: 'string' } } } } } },
    },
  })
  typed() {
    bump('typed');
    return { ...SECRET };
  }
}

describe('Fastify: hooks, schemas and serializers after the cache', () => {
  it('a route-level preSerialization hook shapes the MISS and the HIT; a route without one keeps the raw text', async () => {
    const { http, entry } = await boot('fastify', [HooksController], (app) =>
      fastify(app).addHook('onRoute', (opts) => {
        if (opts.url === '/hooks/hooked') opts.preSerialization = [envelope];
      }),
    );
    expect(await twice(http, '/hooks/hooked')).toEqual(['MISS', { data: { n: 1 } }, 'HIT', { data: { n: 1 } }]);
    expect(await twice(http, '/hooks/plain')).toEqual(['MISS', { n: 1 }, 'HIT', { n: 1 }]);
    // the entry holds the handler's value; the hook runs on each answer
    expect(await entry('/hooks/hooked')).toMatch(/\{"n":1\}$/);
    expect([runs.get('hooked'), runs.get('plain')]).toEqual([1, 1]);
  });

  it('a handler answering two Fastify routes, a hook on one: each route answered as its own', async () => {
    const { http } = await boot('fastify', [HooksController], (app) =>
      fastify(app).addHook('onRoute', (opts) => {
        if (opts.url === '/hooks/two/hooked') opts.preSerialization = [envelope];
      }),
    );
    expect(await twice(http, '/hooks/two/bare')).toEqual(['MISS', { n: 1 }, 'HIT', { n: 1 }]);
    expect(await twice(http, '/hooks/two/hooked')).toEqual(['MISS', { data: { n: 2 } }, 'HIT', { data: { n: 2 } }]);
  });

  it('a global preSerialization hook shapes every cached route', async () => {
    const { http } = await boot('fastify', [HooksController], (app) =>
      fastify(app).addHook('preSerialization', envelope),
    );
    expect(await twice(http, '/hooks/plain')).toEqual(['MISS', { data: { n: 1 } }, 'HIT', { data: { n: 1 } }]);
  });

  it("a response schema: the schema's text is sent and stored, a field it leaves out never is", async () => {
    const { http, entry } = await boot('fastify', [HooksController]);
    const body = { id: 'a1', n: '1' };
    expect(await twice(http, '/hooks/schema')).toEqual(['MISS', body, 'HIT', body]);
    const stored = await entry('/hooks/schema');
    expect(stored?.endsWith('{"id":"a1","n":"1"}')).toBe(true);
    expect(stored).not.toContain('passwordHash');
    expect(runs.get('schema')).toBe(1);
  });

  it('a response schema: an entry stored without it (another instance, an older version) is sent through it', async () => {
    @Controller('hooks')
    @UseInterceptors(HttpCacheInterceptor)
    class NoSchemaController {
      @Get('schema')
      schema() {
        return { ...SECRET };
      }
    }
    const keyPrefix = `rtk-hooks-${randomUUID().slice(0, 8)}:`;
    const before = await boot('fastify', [NoSchemaController], undefined, [], keyPrefix);
    expect((await before.http.get('/hooks/schema').expect(200)).body).toEqual(SECRET);
    const { http } = await boot('fastify', [HooksController], undefined, [], keyPrefix);
    const hit = await http.get('/hooks/schema').expect(200);
    expect([hit.headers['x-cache'], hit.body]).toEqual(['HIT', { id: 'a1', n: '1' }]);
  });

  it("a response schema and a reply's own serializer on the MISS: the schema's text stored, no later HIT leaks", async () => {
    const { http, entry } = await boot('fastify', [HooksController], (app) =>
      fastify(app).addHook('preHandler', (req, reply, done) => {
        if (req.headers['x-own'] === '1') reply.serializer((payload) => JSON.stringify({ own: payload }));
        done();
      }),
    );
    const own = await http.get('/hooks/schema').set('x-own', '1').expect(200);
    expect([own.headers['x-cache'], own.text]).toEqual(['MISS', '{"own":{"id":"a1","n":"1"}}']);
    expect(await entry('/hooks/schema')).not.toContain('passwordHash');
    const hit = await http.get('/hooks/schema').expect(200);
    expect([hit.headers['x-cache'], hit.body]).toEqual(['HIT', { id: 'a1', n: '1' }]);
  });

  it('a response schema per content type: the MISS and the HIT through Fastify (the value parsed back)', async () => {
    const { http } = await boot('fastify', [HooksController]);
    expect(await twice(http, '/hooks/typed')).toEqual(['MISS', { id: 'a1' }, 'HIT', { id: 'a1' }]);
    expect(runs.get('typed')).toBe(1);
  });

  it("the app's reply serializer (setReplySerializer) writes the MISS and the HIT", async () => {
    const { http } = await boot('fastify', [HooksController], (app) =>
      fastify(app).setReplySerializer((payload) => JSON.stringify({ wrapped: payload })),
    );
    expect(await twice(http, '/hooks/plain')).toEqual(['MISS', { wrapped: { n: 1 } }, 'HIT', { wrapped: { n: 1 } }]);
  });

  it("a reply's own serializer (reply.serializer in a hook, per request) writes that reply alone", async () => {
    const { http } = await boot('fastify', [HooksController], (app) =>
      fastify(app).addHook('preHandler', (req, reply, done) => {
        if (req.headers['x-own'] === '1') reply.serializer((payload) => JSON.stringify({ own: payload }));
        done();
      }),
    );
    expect(await twice(http, '/hooks/plain')).toEqual(['MISS', { n: 1 }, 'HIT', { n: 1 }]);
    // Fastify sets no content type for a reply serializer of this kind: the text as it is
    const own = await http.get('/hooks/plain').set('x-own', '1').expect(200);
    expect([own.headers['x-cache'], own.text]).toEqual(['HIT', '{"own":{"n":1}}']);
    expect(runs.get('plain')).toBe(1);
  });
});

describe('Express: res.json wrapped by middleware', () => {
  const wrapWhen = (app: INestApplication): void => {
    app.use((req: { headers: Record<string, string> }, res: { json(body: unknown): unknown }, next: () => void) => {
      if (req.headers['x-wrap'] === '1') {
        const json = res.json.bind(res);
        res.json = (body: unknown) => json({ data: body });
      }
      next();
    });
  };

  it('per request: the wrapped response gets the envelope, the next one the raw text, from one entry', async () => {
    const { http, entry } = await boot('express', [HooksController], wrapWhen);
    expect(
      await twice(http, '/hooks/plain', [
        ['x-wrap', '1'],
        ['x-wrap', '1'],
      ]),
    ).toEqual(['MISS', { data: { n: 1 } }, 'HIT', { data: { n: 1 } }]);
    const plain = await http.get('/hooks/plain').expect(200);
    expect([plain.headers['x-cache'], plain.body, plain.headers.etag]).toEqual(['HIT', { n: 1 }, expect.any(String)]);
    expect(await entry('/hooks/plain')).toMatch(/\{"n":1\}$/);
    expect(runs.get('plain')).toBe(1);
  });

  it("the app's own res.json (app.response.json replaced): every response through it", async () => {
    const { http } = await boot('express', [HooksController], (app) => {
      const proto = (app.getHttpAdapter().getInstance() as { response: { json(body: unknown): unknown } }).response;
      const json = proto.json;
      proto.json = function (this: unknown, body: unknown) {
        return json.call(this, { data: body });
      };
    });
    expect(await twice(http, '/hooks/plain')).toEqual(['MISS', { data: { n: 1 } }, 'HIT', { data: { n: 1 } }]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// A class instance behind an interceptor outside the cache
// ---------------------------------------------------------------------------------------------------------------

class Account {
  constructor(
    readonly id: string,
    readonly passwordHash: string,
  ) {}
}

/** ClassSerializerInterceptor's way (class-transformer is not installed): an Account loses passwordHash, anywhere. */
@Injectable()
class SerializerInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const plain = (v: unknown): unknown => {
      if (Array.isArray(v)) return v.map(plain);
      if (v instanceof Account) return { id: v.id };
      if (typeof v === 'object' && v !== null && !(v instanceof Date)) {
        return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
      }
      return v;
    };
    return next.handle().pipe(map(plain));
  }
}

const account = () => new Account('a1', '$argon2id$secret-hash');

@Controller('acc')
@UseInterceptors(HttpCacheInterceptor)
class AccountsController {
  @Get('list')
  list() {
    bump('list');
    return [account()];
  }

  @Get('page')
  page() {
    bump('page');
    return { items: [account()], total: 1 };
  }

  @Get('dated')
  dated() {
    return { at: new Date(0), n: bump('dated') };
  }
}

@Controller('first')
@UseInterceptors(HttpCacheInterceptor, SerializerInterceptor)
class CacheFirstController {
  @Get('page')
  page() {
    bump('first');
    return { items: [account()], total: 1 };
  }
}

@Controller('global')
class GlobalController {
  @Get('page')
  page() {
    bump('global');
    return { items: [account()], total: 1 };
  }
}

const filtered = { items: [{ id: 'a1' }], total: 1 };

describe.each(PLATFORMS)('a class instance behind an interceptor outside the cache on %s', (platform) => {
  it('inside an array or a plain object: sent as the serializer makes it, never stored, one warning naming the remedy', async () => {
    const { http, entry, warnings } = await boot(platform, [AccountsController], (app) =>
      app.useGlobalInterceptors(new SerializerInterceptor()),
    );
    expect(await twice(http, '/acc/list')).toEqual(['MISS', [{ id: 'a1' }], 'MISS', [{ id: 'a1' }]]);
    expect(await twice(http, '/acc/page')).toEqual(['MISS', filtered, 'MISS', filtered]);
    expect([runs.get('list'), runs.get('page')]).toEqual([2, 2]);
    expect([await entry('/acc/list'), await entry('/acc/page')]).toEqual([null, null]);
    const classWarnings = warnings.filter((w) => w.includes('an instance of Account'));
    expect(classWarnings).toHaveLength(2); // one per route
    expect(classWarnings[0]).toContain('@UseInterceptors(HttpCacheInterceptor, ClassSerializerInterceptor)');
    // a plain object with a Date is stored as before
    const at = new Date(0).toISOString();
    expect(await twice(http, '/acc/dated')).toEqual(['MISS', { at, n: 1 }, 'HIT', { at, n: 1 }]);
  });

  it('the remedy: the cache listed first in @UseInterceptors stores what the serializer made', async () => {
    const { http, entry, warnings } = await boot(platform, [CacheFirstController]);
    expect(await twice(http, '/first/page')).toEqual(['MISS', filtered, 'HIT', filtered]);
    expect(runs.get('first')).toBe(1);
    expect(await entry('/first/page')).not.toContain('passwordHash');
    expect(warnings.filter((w) => w.includes('instance'))).toEqual([]);
  });

  it('the remedy: the cache as APP_INTERCEPTOR runs outside a serializer given to app.useGlobalInterceptors', async () => {
    const { http, entry } = await boot(
      platform,
      [GlobalController],
      (app) => app.useGlobalInterceptors(new SerializerInterceptor()),
      [{ provide: APP_INTERCEPTOR, useClass: HttpCacheInterceptor }],
    );
    expect(await twice(http, '/global/page')).toEqual(['MISS', filtered, 'HIT', filtered]);
    expect(runs.get('global')).toBe(1);
    expect(await entry('/global/page')).not.toContain('passwordHash');
  });
});
