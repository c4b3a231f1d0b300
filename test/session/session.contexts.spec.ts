/**
 * SessionGuard and @CurrentSession in each execution context Nest hands them (test/foundation/nest-stack.hostile.spec.ts
 * found the first two holes):
 * - rpc (a microservice handler): `switchToHttp().getRequest()` is the message payload, and a payload carrying a plain
 *   `session` object (`{ "session": { "userId": "admin" } }`) was taken for the toolkit's session: the guard let an
 *   unauthenticated message through. Now UnsupportedContextError, naming the handler and the remedy. The execution
 *   context is the one Nest builds for an RPC handler (`ExecutionContextHost` of type 'rpc', args `[payload, ctx]`):
 *   `@nestjs/microservices` is not installed.
 * - HTTP: a plain object on `req.session` that the toolkit did not attach (any code's, a body-parsing slip) passed the
 *   guard and was @CurrentSession(); only the session SessionMiddleware / SessionGuard attached counts now (express-
 *   session beside it: session.beside-express-session.spec.ts).
 * - ws (a Socket.IO gateway's @SubscribeMessage handler): the guard read `socket.headers` (absent; the cookie is in
 *   `socket.handshake.headers`), refused a logged-in client with UnauthorizedException, which Nest's WebSocket filter
 *   answers 'Internal server error', logging nothing. Now the handshake cookie's session, read per message, and
 *   refusals the client gets as a WsException payload (401, 403 for another origin).
 * Real Socket.IO over Express and Fastify, real Redis.
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { jest } from '@jest/globals';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Controller, Get, type INestApplication, Req, UseGuards } from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import { ROUTE_ARGS_METADATA } from '@nestjs/common/constants.js';
import { ExecutionContextHost } from '@nestjs/core/helpers/execution-context-host.js';
import { SubscribeMessage, WebSocketGateway } from '@nestjs/websockets';
import type { Socket as ClientSocket } from 'socket.io-client';
import request from 'supertest';
import {
  CurrentSession,
  type Session,
  SessionGuard,
  SessionService,
  UnsupportedContextError,
} from '../../lib/index.js';
import { HttpCacheInterceptor, signCookieValue } from '../../lib/advanced.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisServer } from '../support/redis-server.js';
import { connectSocket } from '../support/socket-io.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, type RedisTarget } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const secret = 's'.repeat(32);
const prefix = (): string => `rtk-ctx-${randomUUID().slice(0, 8)}:`;
const forgedSession = (): Session =>
  ({ id: 'x'.repeat(43), userId: 'admin', data: {}, createdAt: 0, lastAccessedAt: 0, expiresAt: 0 }) as Session;

class RpcHandlers {
  created(_payload: unknown, _ctx: unknown): string {
    return 'ok';
  }
}

/** The execution context Nest builds for a handler of `type` (what an RPC transport or a gateway hands a guard). */
function contextOf(type: string, args: unknown[]) {
  const ctx = new ExecutionContextHost(args, RpcHandlers as never, RpcHandlers.prototype.created);
  ctx.setType(type);
  return ctx;
}

/** The function @CurrentSession(property) runs for a handler's parameter (what Nest calls with the context). */
function currentSessionFactory(property?: keyof Session) {
  class Probe {
    handler(@CurrentSession(property) _value: unknown): void {}
  }
  const args = Reflect.getMetadata(ROUTE_ARGS_METADATA, Probe, 'handler') as Record<
    string,
    { factory: (data: unknown, ctx: ExecutionContextHost) => unknown; data: unknown }
  >;
  const [entry] = Object.values(args);
  return (ctx: ExecutionContextHost) => entry.factory(entry.data, ctx);
}

describe('an RPC handler (a microservice message)', () => {
  const payloads = () => [
    { session: forgedSession() },
    { raw: { session: forgedSession() } },
    { session: forgedSession(), headers: { cookie: 'rtk.sid=x' } },
  ];

  it('SessionGuard refuses the context with UnsupportedContextError naming the handler and the remedy, whatever the payload', async () => {
    const { get } = await createToolkitApp({ keyPrefix: prefix(), session: { cookie: { secret } } });
    const guard = new SessionGuard(get(SessionService));
    const outcomes = await Promise.all(
      payloads().map((payload) => guard.canActivate(contextOf('rpc', [payload, {}])).catch((err: unknown) => err)),
    );
    for (const outcome of outcomes) {
      expect(outcome).toBeInstanceOf(UnsupportedContextError);
      expect((outcome as Error).message).toMatch(
        /"rpc".*RpcHandlers\.created.*payload is never taken.*guard of your own/s,
      );
    }
  });

  it('@CurrentSession() and @CurrentSession("userId") refuse it too, never reading the payload', () => {
    for (const property of [undefined, 'userId'] as const) {
      const read = currentSessionFactory(property);
      for (const payload of payloads()) {
        let outcome: unknown;
        try {
          outcome = read(contextOf('rpc', [payload, {}]));
        } catch (err) {
          outcome = err;
        }
        expect(outcome).toBeInstanceOf(UnsupportedContextError);
      }
    }
  });

  it('a GraphQL resolver context is refused the same way (its first argument is the parent value, not a request)', async () => {
    const { get } = await createToolkitApp({ keyPrefix: prefix(), session: { cookie: { secret } } });
    const guard = new SessionGuard(get(SessionService));
    const outcome = await guard
      .canActivate(contextOf('graphql', [{ session: forgedSession() }, {}, { req: {} }, {}]))
      .catch((err: unknown) => err);
    expect(outcome).toBeInstanceOf(UnsupportedContextError);
    expect((outcome as Error).message).toMatch(/"graphql".*RpcHandlers\.created/s);
  });
});

@Controller('ctx')
class ContextsController {
  @Get('guarded')
  @UseGuards(SessionGuard)
  guarded(@CurrentSession('userId') userId: string) {
    return { userId };
  }

  @Get('open')
  open(@CurrentSession() session: Session | null) {
    return { userId: session === null ? null : session.userId };
  }
}

/** Middleware of the app's that leaves a plain object on `req.session` (on Fastify: the Node request's). */
function plantPlainSession(app: INestApplication): void {
  app.use((req: { session?: unknown }, _res: unknown, next: () => void) => {
    req.session = forgedSession();
    next();
  });
}

/** A route whose answer is the user of the app's own session (a plain object its middleware puts on req.session). */
@Controller('own-session')
class OwnSessionController {
  @Get('me')
  me(@Req() req: { session?: { userId?: string } }) {
    return { user: req.session?.userId ?? null };
  }
}

/** The app's own session middleware: `req.session = { userId }` from its `uid` cookie. */
function ownSessionMiddleware(app: INestApplication): void {
  app.use((req: { headers: { cookie?: string }; session?: unknown }, _res: unknown, next: () => void) => {
    const uid = /uid=(\w+)/.exec(req.headers.cookie ?? '')?.[1];
    if (uid !== undefined) req.session = { userId: uid };
    next();
  });
}

describe.each(PLATFORMS)('HTTP on %s: only the session the toolkit attached counts', (platform) => {
  it('a plain object on req.session that the toolkit did not attach neither passes SessionGuard nor is @CurrentSession()', async () => {
    const app = await createToolkitApp({
      keyPrefix: prefix(),
      platform,
      http: true,
      session: { cookie: { secret } },
      controllers: [ContextsController],
      beforeInit: plantPlainSession,
    });
    const http = request(app.app.getHttpServer() as Server);
    const guarded = await http.get('/ctx/guarded');
    expect([guarded.status, guarded.body.userId]).toEqual([401, undefined]);
    const open = await http.get('/ctx/open');
    expect([open.status, open.body]).toEqual([200, { userId: null }]);
    // a real session cookie still passes (the guard reads it and attaches its session over the planted object)
    const session = await app.get(SessionService).create('user-http');
    const cookie = `rtk.sid=${encodeURIComponent(signCookieValue(session.id, secret))}`;
    const ok = await http.get('/ctx/guarded').set('Cookie', cookie);
    expect([ok.status, ok.body]).toEqual([200, { userId: 'user-http' }]);
  });
});

describe.each(PLATFORMS)("HTTP on %s: an app's own plain req.session and the shared URL cache", (platform) => {
  // Not a session to SessionGuard, but still a sign that someone is logged in to HttpCacheInterceptor: its answer
  // stays out of the key every user shares. (2391acb made the cache's check as strict as the guard's, and bob got
  // ann's cached answer: ['MISS', ann], ['HIT', ann].)
  it("one user's answer is never served to another from the URL key", async () => {
    const app = await createToolkitApp({
      keyPrefix: prefix(),
      platform,
      http: true,
      cache: { defaultTtl: 60_000, beta: 0 },
      session: { cookie: { secret } },
      controllers: [OwnSessionController],
      providers: [{ provide: APP_INTERCEPTOR, useClass: HttpCacheInterceptor }],
      beforeInit: ownSessionMiddleware,
    });
    const http = request(app.app.getHttpServer() as Server);
    const ann = await http.get('/own-session/me').set('Cookie', 'uid=ann');
    const bob = await http.get('/own-session/me').set('Cookie', 'uid=bob');
    expect([
      [ann.headers['x-cache'], ann.body],
      [bob.headers['x-cache'], bob.body],
    ]).toEqual([
      ['BYPASS', { user: 'ann' }],
      ['BYPASS', { user: 'bob' }],
    ]);
  });
});

@WebSocketGateway({ namespace: '/session-contexts' })
class ContextsGateway {
  @SubscribeMessage('whoami')
  @UseGuards(SessionGuard)
  whoami(@CurrentSession('userId') userId: string, @CurrentSession() session: Session): unknown {
    return { userId, sameUser: session.userId === userId };
  }

  /** No guard: @CurrentSession gives what a guarded message of this socket read, null before any. */
  @SubscribeMessage('peek')
  peek(@CurrentSession('userId') userId: string | null): unknown {
    return { userId };
  }
}

describe.each(PLATFORMS)('a Socket.IO gateway on %s: the session of the handshake cookie', (platform) => {
  const sockets: ClientSocket[] = [];
  afterEach(() => {
    for (const s of sockets.splice(0)) s.disconnect();
  });

  async function boot(target?: RedisTarget) {
    const app = await createToolkitApp({
      target,
      commandTimeout: target === undefined ? undefined : 300,
      keyPrefix: prefix(),
      platform,
      http: true,
      session: { cookie: { secret } },
      providers: [ContextsGateway],
    });
    const { port } = (app.app.getHttpServer() as Server).address() as AddressInfo;
    const sessions = app.get(SessionService);
    const cookieOf = (s: Session): string => `rtk.sid=${encodeURIComponent(signCookieValue(s.id, secret))}`;
    const connect = (headers: Record<string, string> = {}): Promise<ClientSocket> =>
      connectSocket(`http://127.0.0.1:${port}/session-contexts`, sockets, { extraHeaders: headers });
    return { sessions, cookieOf, connect, host: `127.0.0.1:${port}` };
  }

  /** Whichever comes: the handler's answer, or the `exception` event of a refusal (no timer involved). */
  function ask(socket: ClientSocket, event: string): Promise<unknown> {
    return new Promise((resolve) => {
      const onException = (e: unknown) => resolve({ exception: e });
      socket.once('exception', onException);
      socket.emit(event, {}, (answer: unknown) => {
        socket.off('exception', onException);
        resolve(answer);
      });
    });
  }

  it('a guarded handler sees the session of the handshake cookie; @CurrentSession gives it and its properties', async () => {
    const { sessions, cookieOf, connect, host } = await boot();
    const session = await sessions.create('user-ws');
    // without an Origin (not a browser page), and from the same origin
    const headerSets: Record<string, string>[] = [
      { cookie: cookieOf(session) },
      { cookie: cookieOf(session), origin: `http://${host}` },
    ];
    for (const headers of headerSets) {
      const socket = await connect(headers);
      expect(await ask(socket, 'peek')).toEqual({ userId: null });
      expect(await ask(socket, 'whoami')).toEqual({ userId: 'user-ws', sameUser: true });
      expect(await ask(socket, 'peek')).toEqual({ userId: 'user-ws' });
    }
  });

  it('no cookie, or a tampered one: a 401 WsException payload, not "Internal server error"', async () => {
    const { sessions, cookieOf, connect } = await boot();
    const session = await sessions.create('user-ws');
    const tampered = cookieOf(session).replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'));
    const headerSets: Record<string, string>[] = [{}, { cookie: tampered }, { cookie: `rtk.sid=${session.id}` }];
    for (const headers of headerSets) {
      const socket = await connect(headers);
      expect(await ask(socket, 'whoami')).toEqual({
        exception: { statusCode: 401, message: 'A valid session is required' },
      });
    }
  });

  it('the session is read per message: once destroyed, the next message is refused and @CurrentSession gives null', async () => {
    const { sessions, cookieOf, connect } = await boot();
    const session = await sessions.create('user-ws');
    const socket = await connect({ cookie: cookieOf(session) });
    expect(await ask(socket, 'whoami')).toEqual({ userId: 'user-ws', sameUser: true });
    expect(await sessions.destroy(session.id)).toBe(true);
    expect(await ask(socket, 'whoami')).toEqual({
      exception: { statusCode: 401, message: 'A valid session is required' },
    });
    expect(await ask(socket, 'peek')).toEqual({ userId: null });
  });

  it('the cookie sent from another origin (cross-site WebSocket hijacking) is refused with 403, the session untouched', async () => {
    const { sessions, cookieOf, connect } = await boot();
    const session = await sessions.create('user-ws');
    const socket = await connect({ cookie: cookieOf(session), origin: 'https://evil.example' });
    const reads = jest.spyOn(sessions, 'get'); // counts the calls, each still goes to Redis
    const outcome = (await ask(socket, 'whoami')) as { exception?: { statusCode?: number; message?: string } };
    expect(outcome.exception?.statusCode).toBe(403);
    expect(outcome.exception?.message).toMatch(/origin.*allowedOrigins/);
    expect(await ask(socket, 'peek')).toEqual({ userId: null });
    // refused before any lookup: a cross-site page does not even learn whether the cookie is valid
    expect(reads).not.toHaveBeenCalled();
    reads.mockRestore();
  });

  it('Redis unreachable: a 503 WsException payload (E_REDIS_UNAVAILABLE), never a pass or "Internal server error"', async () => {
    const server = trackForCleanup(await startRedisServer());
    const { sessions, cookieOf, connect } = await boot({ url: server.url });
    const session = await sessions.create('user-ws');
    const socket = await connect({ cookie: cookieOf(session) });
    expect(await ask(socket, 'whoami')).toEqual({ userId: 'user-ws', sameUser: true });
    await server.kill();
    const outcome = (await ask(socket, 'whoami')) as { exception?: Record<string, unknown> };
    expect(outcome.exception).toMatchObject({ statusCode: 503, code: 'E_REDIS_UNAVAILABLE' });
    expect(String(outcome.exception?.message)).toMatch(/Sessions are temporarily unavailable/);
  });
});
