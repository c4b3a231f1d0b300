/**
 * HTTP/2: every HTTP feature on a Nest app served over HTTP/2, on Fastify (`new FastifyAdapter({ http2: true })`, h2c,
 * and `{ http2: true, https: { key, cert, allowHTTP1: true } }`, TLS), called with Node's `http2.connect` client.
 * Fastify only: Nest 12's ExpressAdapter creates an `http` or `https` server and nothing else (initHttpServer), and
 * Express 5 cannot answer a request of `http2.createServer(app)` at all (its request prototype swap leaves the
 * Http2ServerRequest without its stream: `TypeError: Cannot read properties of undefined (reading 'readable')` in
 * IncomingMessage._read), so there is no Express-on-HTTP/2 app to test.
 * What differs on HTTP/2: no Host header (`:authority`), and a stream the client resets emits 'finish' (then 'close')
 * on the Http2ServerResponse although nothing was sent (`writableEnded` false, status still 200). A server that speaks
 * no HTTP/1.1 (h2c; TLS without allowHTTP1) takes no WebSocket: the gateway warns at start there.
 */
import 'reflect-metadata';
import {
  Controller,
  Get,
  HttpException,
  type INestApplication,
  type MiddlewareConsumer,
  Module,
  type NestModule,
  Post,
  Req,
  Res,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { randomBytes } from 'node:crypto';
import { createServer as createHttpServer } from 'node:http';
import {
  type ClientHttp2Session,
  connect,
  constants,
  createServer as createH2cServer,
  createSecureServer,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
} from 'node:http2';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import { type AddressInfo, connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { WebSocket } from 'ws';
import { CacheTTL, HttpCacheInterceptor } from '../../lib/advanced.js';
import { RedisToolkitDashboardModule } from '../../lib/dashboard/index.js';
import { http1Refused } from '../../lib/notifications/notifications.http2.js';
import {
  CurrentSession,
  RateLimitGuard,
  RedisToolkitModule,
  type Session,
  SessionGuard,
  SessionMiddleware,
  SessionService,
  Throttle,
} from '../../lib/index.js';
import { userFromHeader } from '../support/rate-limit-http.js';
import { recordingLogger } from '../support/recording-logger.js';
import { makeTlsFiles, type TlsFiles } from '../support/tls-certs.js';
import { connectionFor } from '../support/toolkit-app.js';

interface Served {
  entered: Promise<void>;
  closed: Promise<void>;
  enter(): void;
  close(): void;
}

/** Per user (X-User-Id), when its request reached the handler and when its Node response closed. */
const served = new Map<string, Served>();

function expectServed(user: string): Served {
  let enter: () => void = () => undefined;
  let close: () => void = () => undefined;
  const entered = new Promise<void>((r) => {
    enter = r;
  });
  const closed = new Promise<void>((r) => {
    close = r;
  });
  const s = { entered, closed, enter, close };
  served.set(user, s);
  return s;
}

/** A guarded route's handler: signals, holds until the stream is gone (X-Hold), fails with a 401 (X-Fail). */
async function outcome(req: FastifyRequest, reply: FastifyReply): Promise<string> {
  const s = served.get(String(req.headers['x-user-id']));
  const closed = new Promise<void>((r) => reply.raw.once('close', () => r()));
  void closed.then(() => s?.close());
  s?.enter();
  if (req.headers['x-hold'] !== undefined) await closed;
  if (req.headers['x-fail'] !== undefined) throw new HttpException('failed', 401);
  return 'done';
}

@Controller('rl')
@UseGuards(RateLimitGuard)
class RateLimitController {
  @Get('plain')
  @Throttle({ limit: 2, ttl: 60_000, key: userFromHeader })
  plain(): string {
    return 'pong';
  }

  @Get('ip')
  @Throttle({ limit: 1, ttl: 60_000 })
  ip(): string {
    return 'pong';
  }

  @Get('failed')
  @Throttle({ limit: 3, ttl: 60_000, key: userFromHeader, skipFailedRequests: true })
  failed(@Req() req: FastifyRequest, @Res({ passthrough: true }) reply: FastifyReply): Promise<string> {
    return outcome(req, reply);
  }

  @Get('succeeded')
  @Throttle({ limit: 3, ttl: 60_000, key: userFromHeader, skipSuccessfulRequests: true })
  succeeded(@Req() req: FastifyRequest, @Res({ passthrough: true }) reply: FastifyReply): Promise<string> {
    return outcome(req, reply);
  }
}

let loads = 0;

@Controller('cache')
@UseInterceptors(HttpCacheInterceptor)
class CacheController {
  @Get('item')
  @CacheTTL(60_000)
  item(): { n: number } {
    loads++;
    return { n: loads };
  }

  /** Held until the client resets its stream (X-Hold), then answers what it loaded. */
  @Get('held')
  @CacheTTL(60_000)
  async held(@Req() req: FastifyRequest, @Res({ passthrough: true }) reply: FastifyReply): Promise<{ n: number }> {
    const n = ++loads;
    await outcome(req, reply);
    return { n };
  }
}

@Controller('sess')
class SessionController {
  constructor(private readonly sessions: SessionService) {}

  @Post('login')
  async login(@Req() req: FastifyRequest, @Res({ passthrough: true }) reply: FastifyReply) {
    const session = await this.sessions.create('alice');
    this.sessions.writeCookie(reply, session, req);
    return { userId: session.userId };
  }

  @Get('open')
  open(@CurrentSession() session: Session | null) {
    return { userId: session?.userId ?? null };
  }

  @Get('me')
  @UseGuards(SessionGuard)
  me(@CurrentSession('userId') userId: string) {
    return { userId };
  }
}

@Module({ controllers: [SessionController] })
class SessionRoutes implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(SessionMiddleware).forRoutes(SessionController);
  }
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One request on the session; an event stream is read to its first chunk, then the stream is closed. */
function ask(session: ClientHttp2Session, path: string, headers: OutgoingHttpHeaders = {}, body?: string) {
  return new Promise<Answer>((resolve, reject) => {
    const stream = session.request({ ':path': path, ...headers }, { endStream: body === undefined });
    let head: IncomingHttpHeaders = {};
    let text = '';
    const done = () => resolve({ status: Number(head[':status']), headers: head, body: text });
    stream.setEncoding('utf8');
    stream.on('response', (h) => {
      head = h;
    });
    stream.on('data', (chunk: string) => {
      text += chunk;
      if (String(head['content-type']).startsWith('text/event-stream')) {
        done();
        stream.close(constants.NGHTTP2_CANCEL);
      }
    });
    stream.on('end', done);
    stream.on('error', reject);
    if (body !== undefined) stream.end(body);
  });
}

/** POST /sess/login over HTTP/2: the session cookie (`name=value`). */
async function login(session: ClientHttp2Session): Promise<string> {
  const answer = await ask(session, '/sess/login', { ':method': 'POST' });
  return String(answer.headers['set-cookie']?.[0]).split(';')[0];
}

/** A request to a guarded route that the client resets once the handler runs; resolves once the server saw it go. */
async function resetWhileServed(session: ClientHttp2Session, path: string, user: string): Promise<void> {
  const s = expectServed(user);
  const stream = session.request({ ':path': path, 'x-user-id': user, 'x-hold': '1' });
  stream.on('error', () => undefined);
  await s.entered;
  stream.close(constants.NGHTTP2_CANCEL);
  await s.closed;
}

/** A request to a guarded route, answered once the server's response closed (its refund is sent by then). */
async function served2(session: ClientHttp2Session, path: string, user: string, fail = false): Promise<Answer> {
  const s = expectServed(user);
  const answer = await ask(session, path, { 'x-user-id': user, ...(fail && { 'x-fail': '1' }) });
  await s.closed;
  return answer;
}

/** What a guarded route's next admitted request says is left (X-RateLimit-Remaining). */
async function remainingAfter(session: ClientHttp2Session, path: string, user: string): Promise<number> {
  const next = await served2(session, path, user);
  expect(next.status).toBe(200);
  return Number(next.headers['x-ratelimit-remaining']);
}

/** Socket.IO over HTTP/2 (engine.io long polling, as a browser on an h2 origin does): the namespace's connect reply. */
async function socketIoConnect(session: ClientHttp2Session, origin: string, cookie: string): Promise<string> {
  const headers = { origin, cookie };
  const open = await ask(session, '/socket.io/?EIO=4&transport=polling', headers);
  expect(open.status).toBe(200);
  const sid = (JSON.parse(open.body.slice(1)) as { sid: string }).sid;
  const path = `/socket.io/?EIO=4&transport=polling&sid=${sid}`;
  const posted = await ask(session, path, { ...headers, ':method': 'POST', 'content-type': 'text/plain' }, '40/n,');
  expect(posted.body).toBe('ok');
  const reply = (await ask(session, path, headers)).body;
  // engine.io's close packet: no socket (and its ping timer) outlives the test
  await ask(session, path, { ...headers, ':method': 'POST', 'content-type': 'text/plain' }, '1');
  return reply;
}

/** An HTTP/1.1 request over TLS (the `allowHTTP1` fallback of the same server). */
function askHttp1(url: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca: tls.ca, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Socket.IO over a WebSocket (HTTP/1.1 upgrade, as browsers open it beside an h2 origin): the connect reply. */
function socketIoWebSocket(origin: string, wsOrigin: string, cookie: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${origin.replace('https', 'wss')}/socket.io/?EIO=4&transport=websocket`, {
      ca: tls.ca,
      headers: { origin: wsOrigin, cookie },
    });
    ws.on('message', (data) => {
      const text = String(data);
      if (text.startsWith('0')) ws.send('40/n,');
      else if (text.startsWith('4')) {
        resolve(text);
        ws.close();
      }
    });
    ws.on('error', reject);
  });
}

type Mode = 'h2c' | 'tls';
/** `tls` serves HTTP/1.1 too (allowHTTP1); `tls-h2-only` does not (the gateway's start-up warning). */
type BootMode = Mode | 'tls-h2-only';

interface H2App {
  app: INestApplication;
  session: ClientHttp2Session;
  /** A second client, from 127.0.0.2 (another client address). */
  other: ClientHttp2Session;
  origin: string;
  errors: string[];
  warnings: string[];
}

let tls: TlsFiles & { key: string; cert: string };

async function bootH2(mode: BootMode): Promise<H2App> {
  const log = recordingLogger();
  const moduleRef = await Test.createTestingModule({
    imports: [
      RedisToolkitModule.forRoot({
        connection: connectionFor('single'),
        keyPrefix: `rtk-h2-${randomBytes(4).toString('hex')}:`,
        rateLimit: { headers: 'both' },
        session: { cookie: { secret: 'http2-secret-of-enough-length', secure: 'auto' } },
        // the gateway's default authenticate: the session cookie (so the handshake's Origin is checked)
        pubsub: { gateway: {} },
        notificationsGateway: { namespace: '/n' },
      }),
      SessionRoutes,
      RedisToolkitDashboardModule.register({ unsafeNoAuth: true, intervalMs: 60_000 }),
    ],
    controllers: [RateLimitController, CacheController],
  }).compile();
  const adapter =
    mode === 'h2c'
      ? new FastifyAdapter({ http2: true })
      : new FastifyAdapter({
          http2: true,
          https: { key: tls.key, cert: tls.cert, allowHTTP1: mode === 'tls' },
        });
  const app = moduleRef.createNestApplication(adapter, { logger: log.logger });
  await app.init();
  await app.listen(0, '127.0.0.1');
  const { port } = app.getHttpServer().address() as AddressInfo;
  const origin = `${mode === 'h2c' ? 'http' : 'https'}://127.0.0.1:${port}`;
  const session = connect(origin, mode === 'h2c' ? {} : { ca: tls.ca });
  const from = { host: '127.0.0.1', port, localAddress: '127.0.0.2' };
  const other = connect(origin, {
    createConnection: () =>
      mode === 'h2c' ? netConnect(from) : tlsConnect({ ...from, ca: tls.ca, ALPNProtocols: ['h2'] }),
  });
  return { app, session, other, origin, errors: log.errors, warnings: log.warnings };
}

async function closeH2(h2: H2App): Promise<void> {
  h2.session.close();
  h2.other.close();
  await h2.app.close();
}

const apps = new Map<Mode, H2App>();

beforeAll(async () => {
  const files = makeTlsFiles();
  const { readFileSync } = await import('node:fs');
  tls = Object.assign(files, { key: readFileSync(files.keyFile, 'utf8'), cert: readFileSync(files.certFile, 'utf8') });
  for (const mode of ['h2c', 'tls'] as const) apps.set(mode, await bootH2(mode));
});

afterAll(async () => {
  for (const a of apps.values()) await closeH2(a);
  tls?.remove();
});

describe.each(['h2c', 'tls'] as const)('Fastify over HTTP/2 (%s)', (mode) => {
  const h2 = () => apps.get(mode) as H2App;
  const user = () => `${mode}-${randomBytes(4).toString('hex')}`;

  it('rate limit: 429 after the limit, with Retry-After and the draft and legacy headers', async () => {
    const u = user();
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await ask(h2().session, '/rl/plain', { 'x-user-id': u }));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 429]);
    expect(answers.map((a) => a.headers['x-ratelimit-remaining'])).toEqual(['1', '0', '0']);
    expect(answers[0].headers['ratelimit-policy']).toBe('"default";q=2;w=60');
    expect(answers[0].headers.ratelimit).toMatch(/^"default";r=1;t=\d+$/);
    expect(Number(answers[2].headers['retry-after'])).toBeGreaterThan(0);
    expect(JSON.parse(answers[2].body)).toMatchObject({ statusCode: 429 });
  });

  it('rate limit: the default tracker (the client address) tells two clients apart', async () => {
    const statuses = [
      (await ask(h2().session, '/rl/ip')).status,
      (await ask(h2().session, '/rl/ip')).status,
      (await ask(h2().other, '/rl/ip')).status,
    ];
    expect(statuses).toEqual([200, 429, 200]);
  });

  it('rate limit: skipFailedRequests refunds a 401, not a 200', async () => {
    const [failed, ok] = [user(), user()];
    expect((await served2(h2().session, '/rl/failed', failed, true)).status).toBe(401);
    expect((await served2(h2().session, '/rl/failed', ok)).status).toBe(200);
    // limit 3: the refunded 401 leaves 2 after the next charge, the kept 200 leaves 1
    expect([
      await remainingAfter(h2().session, '/rl/failed', failed),
      await remainingAfter(h2().session, '/rl/failed', ok),
    ]).toEqual([2, 1]);
  });

  it('rate limit: skipSuccessfulRequests refunds a 200, not a 401', async () => {
    const [failed, ok] = [user(), user()];
    expect((await served2(h2().session, '/rl/succeeded', failed, true)).status).toBe(401);
    expect((await served2(h2().session, '/rl/succeeded', ok)).status).toBe(200);
    const left = [
      await remainingAfter(h2().session, '/rl/succeeded', failed),
      await remainingAfter(h2().session, '/rl/succeeded', ok),
    ];
    expect(left).toEqual([1, 2]);
  });

  it('rate limit: a stream reset before the response is a failure (refunded by skipFailedRequests only)', async () => {
    const [a, b] = [user(), user()];
    await resetWhileServed(h2().session, '/rl/failed', a);
    await resetWhileServed(h2().session, '/rl/succeeded', b);
    const left = [
      await remainingAfter(h2().session, '/rl/failed', a),
      await remainingAfter(h2().session, '/rl/succeeded', b),
    ];
    // skipFailedRequests: refunded, 2 left after the next charge; skipSuccessfulRequests: kept, 1 left
    expect(left).toEqual([2, 1]);
  });

  it('sessions: the cookie is set, read back by SessionMiddleware and SessionGuard; no cookie is refused', async () => {
    const login = await ask(h2().session, '/sess/login', { ':method': 'POST' });
    expect(login.status).toBe(201);
    const setCookie = ([] as string[]).concat(login.headers['set-cookie'] ?? []);
    expect(setCookie).toHaveLength(1);
    // secure: 'auto' — Secure over TLS only
    expect(/;\s*Secure/i.test(setCookie[0])).toBe(mode === 'tls');
    const cookie = setCookie[0].split(';')[0];
    const open = await ask(h2().session, '/sess/open', { cookie });
    // SessionMiddleware's rolling refresh, written on the Node request's protocol (middie's copy of Fastify's)
    const refreshed = ([] as string[]).concat(open.headers['set-cookie'] ?? []);
    expect(refreshed.map((c) => [c.split(';')[0] === cookie, /;\s*Secure/i.test(c)])).toEqual([[true, mode === 'tls']]);
    const me = await ask(h2().session, '/sess/me', { cookie });
    const anonymous = await ask(h2().session, '/sess/me');
    // HTTP/2 lets a client split its cookies over several header fields (RFC 9113 8.2.3)
    const crumbs = await ask(h2().session, '/sess/me', { cookie: ['a=1', cookie, 'b=2'] });
    expect([open.status, JSON.parse(open.body), me.status, JSON.parse(me.body), anonymous.status]).toEqual([
      200,
      { userId: 'alice' },
      200,
      { userId: 'alice' },
      401,
    ]);
    expect([crumbs.status, crumbs.body]).toEqual([200, JSON.stringify({ userId: 'alice' })]);
  });

  it('URL cache: MISS then HIT with the same body; HEAD answers without a body', async () => {
    const path = `/cache/item?${mode}=${randomBytes(4).toString('hex')}`;
    const miss = await ask(h2().session, path);
    const hit = await ask(h2().session, path);
    const head = await ask(h2().session, path, { ':method': 'HEAD' });
    expect([miss.status, miss.headers['x-cache'], hit.status, hit.headers['x-cache']]).toEqual([
      200,
      'MISS',
      200,
      'HIT',
    ]);
    expect(hit.body).toBe(miss.body);
    // the stored ETag is Express's (its adapter serves no HTTP/2); Fastify sends none, on HTTP/1.1 as here
    expect([miss.headers.etag, hit.headers.etag]).toEqual([undefined, undefined]);
    expect([head.status, head.body]).toEqual([200, '']);
  });

  it('URL cache: a stream reset while the route loads leaves a sound entry (then a HIT of the same body)', async () => {
    const path = `/cache/held?${mode}=${randomBytes(4).toString('hex')}`;
    await resetWhileServed(h2().session, path, 'cache-reset');
    const next = await ask(h2().session, path);
    const hit = await ask(h2().session, path);
    expect([next.status, hit.status, hit.headers['x-cache'], hit.body]).toEqual([200, 200, 'HIT', next.body]);
    expect(JSON.parse(next.body)).toEqual({ n: expect.any(Number) });
  });

  it('dashboard: served for a loopback :authority, refused for a foreign one, its event stream opens', async () => {
    const snapshot = await ask(h2().session, '/_toolkit/snapshot');
    const foreign = await ask(h2().session, '/_toolkit/snapshot', { ':authority': 'rebind.attacker.example' });
    const events = await ask(h2().session, '/_toolkit/events');
    expect([snapshot.status, foreign.status, events.status]).toEqual([200, 403, 200]);
    expect(String(events.headers['content-type'])).toMatch(/^text\/event-stream/);
  });

  it('notifications gateway: a same-origin cookie handshake over HTTP/2 is admitted, a foreign one not', async () => {
    const cookie = await login(h2().session);
    const same = await socketIoConnect(h2().session, h2().origin, cookie);
    const foreign = await socketIoConnect(h2().session, 'https://evil.example', cookie);
    expect(same).toMatch(/^40\/n,\{"sid":/);
    expect(foreign).toMatch(/^44\/n,.*E_FORBIDDEN_ORIGIN/);
  });

  it('nothing was logged as an error', () => {
    expect(h2().errors).toEqual([]);
  });

  it('the gateway warned at start where the server speaks no HTTP/1.1 (h2c), once, and not over TLS with HTTP/1.1', () => {
    const said = h2().warnings.filter((w) => w.startsWith('notifications: the gateway is served by'));
    expect(said.map((w) => /\(h2c\)/.test(w))).toEqual(mode === 'h2c' ? [true] : []);
  });
});

describe('Fastify over HTTP/2 with allowHTTP1 (TLS)', () => {
  const tlsApp = () => apps.get('tls') as H2App;

  it('HTTP/1.1 clients of the same server are served as before (request headers, URL cache, WebSocket)', async () => {
    const u = `h1-${randomBytes(4).toString('hex')}`;
    const first = await askHttp1(`${tlsApp().origin}/rl/plain`, { 'x-user-id': u });
    const cached = `${tlsApp().origin}/cache/item?h1=${randomBytes(4).toString('hex')}`;
    const [miss, hit] = [await askHttp1(cached), await askHttp1(cached)];
    expect([
      first.status,
      first.headers['x-ratelimit-remaining'],
      miss.headers['x-cache'],
      hit.headers['x-cache'],
    ]).toEqual([200, '1', 'MISS', 'HIT']);
    const cookie = await login(tlsApp().session);
    expect(await socketIoWebSocket(tlsApp().origin, tlsApp().origin, cookie)).toMatch(/^40\/n,\{"sid":/);
    expect(await socketIoWebSocket(tlsApp().origin, 'https://evil.example', cookie)).toMatch(
      /^44\/n,.*E_FORBIDDEN_ORIGIN/,
    );
  });
});

describe('the gateway on an HTTP/2 server over TLS without allowHTTP1', () => {
  let h2: H2App;
  beforeAll(async () => {
    h2 = await bootH2('tls-h2-only');
  });
  afterAll(() => closeH2(h2));

  it('warns at start, once, naming allowHTTP1; HTTP/2 clients still connect by long polling', async () => {
    const said = h2.warnings.filter((w) => w.startsWith('notifications: the gateway is served by'));
    expect(said.map((w) => w.includes('over TLS without allowHTTP1'))).toEqual([true]);
    const cookie = await login(h2.session);
    expect(await socketIoConnect(h2.session, h2.origin, cookie)).toMatch(/^40\/n,\{"sid":/);
    expect(h2.errors).toEqual([]);
  });

  it('an HTTP/1.1 client cannot connect there (what the warning says)', async () => {
    const { port } = new URL(h2.origin);
    const refused = await new Promise<string>((resolve) => {
      const socket = tlsConnect({ host: '127.0.0.1', port: Number(port), ca: tls.ca, ALPNProtocols: ['http/1.1'] });
      socket.on('secureConnect', () => {
        socket.destroy();
        resolve('connected');
      });
      socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    expect(refused).toBe('ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL');
  });
});

describe('http1Refused: the servers the gateway may be attached to', () => {
  it('h2c and HTTP/2 over TLS without allowHTTP1 refuse HTTP/1.1; http, https and allowHTTP1 do not', () => {
    const creds = { key: tls.key, cert: tls.cert };
    const servers = [
      createHttpServer(),
      createHttpsServer(creds),
      createH2cServer(),
      createSecureServer({ ...creds, allowHTTP1: true }),
      createSecureServer(creds),
    ];
    expect([...servers.map(http1Refused), http1Refused(undefined), http1Refused({})]).toEqual([
      undefined,
      undefined,
      'h2c',
      undefined,
      'tls',
      undefined,
      undefined,
    ]);
  });
});
