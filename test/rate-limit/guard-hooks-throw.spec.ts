/**
 * Every hook of RateLimitGuard a user overrides or gives as an option, throwing synchronously and rejecting, on HTTP
 * (Express and Fastify), a Socket.IO gateway handler and a GraphQL resolver (Apollo on Express, Mercurius on Fastify),
 * with the hook's own exception (an HttpException, on Socket.IO a WsException) and with a plain Error.
 *
 * What must hold for each (docs/rate-limit.md, Customising the guard, "A hook that throws or rejects"): the request
 * gets the hook's error as its own (HTTP: the HttpException's status and body, else a 500; Socket.IO: Nest's WS
 * exception filter, a WsException's payload, else `{ status: 'error', message: 'Internal server error' }`; GraphQL:
 * an error with its message); the handler does not run; no unhandled rejection; never taken for a transport failure
 * (nothing failed open, nothing about Redis logged); a hook that runs before the charge leaves nothing charged, one
 * that runs after an admission (setHeaders, setResponseHeader) leaves that one charge, as any admitted request that
 * then failed; and the next request is decided as usual (exactly the units left are admitted, then the standard 429).
 * The sync hooks (generateKey, getRequestResponse, rateLimit.errorMessage) refuse a Promise, a rejected one too, with
 * an InvalidOptionsError naming the hook (guard-hooks.hostile.spec.ts holds the message); their rejection is handled.
 * guard-hooks.hostile.spec.ts holds the wrong-type values and the throw* hooks that return.
 */
import 'reflect-metadata';
import { Controller, Get, HttpException, Injectable, UseGuards, type ExecutionContext } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { Query, Resolver } from '@nestjs/graphql';
import { SubscribeMessage, WebSocketGateway, WsException } from '@nestjs/websockets';
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { Socket } from 'socket.io-client';
import request from 'supertest';
import { RateLimitGuard, RateLimitService, RedisUnavailableError, Throttle } from '../../lib/index.js';
import type { ThrottledRequest } from '../../lib/advanced.js';
import { recordingLogger } from '../support/recording-logger.js';
import { bootLoggedHttpApp, type GraphqlReply } from '../support/rate-limit-http.js';
import { type GuardHook, graphqlModule, hookRoutedGuard, trackerOf } from '../support/rate-limit-hooks.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { ackOrException, connectSocket } from '../support/socket-io.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS } from '../support/toolkit-app.js';
import { countUnhandledRejectionsInFile, settleRejections } from '../support/unhandled.js';
import { waitFor } from '../support/wait.js';

/** The guard's hooks (setResponseHeader's Retry-After write apart), and the option functions that can fail. */
type Hook =
  | GuardHook
  | 'retryAfterHeader'
  | 'skipIf'
  | 'errorMessage'
  | 'ignoreUserAgents'
  | 'key'
  | 'limit'
  | 'ttl'
  | 'cost'
  | 'algorithm'
  | 'burst'
  | 'blockDuration';
type Ctx = 'http' | 'ws' | 'graphql';

/** The failing hook of the running case (the others do what the default does), and the context it is asked in. */
const current: { hook?: Hook; fail?: (hook: Hook) => unknown; ctx: Ctx } = { ctx: 'http' };
const run = (hook: Hook, base: () => unknown): never =>
  (current.hook === hook && current.fail ? current.fail(hook) : base()) as never;

/** The hook's own exception: a WsException on Socket.IO (what Nest's WS filter sends), else an HttpException 418. */
const ownError = (hook: Hook): Error =>
  current.ctx === 'ws'
    ? new WsException({ statusCode: 418, message: `${hook} said no` })
    : new HttpException({ statusCode: 418, message: `${hook} said no` }, 418);
const plainError = (hook: Hook): Error => new Error(`plain failure of ${hook}`);

interface Behaviour {
  label: string;
  plain: boolean;
  sync: boolean;
}
const BEHAVIOURS: Behaviour[] = [
  { label: 'throws its own exception', plain: false, sync: true },
  { label: 'rejects with its own exception', plain: false, sync: false },
  { label: 'throws a plain Error', plain: true, sync: true },
  { label: 'rejects with a plain Error', plain: true, sync: false },
];
const failing = (b: Behaviour) => (hook: Hook) => {
  const error = b.plain ? plainError(hook) : ownError(hook);
  if (b.sync) throw error;
  return Promise.reject(error);
};

/** The request of any of the three contexts (for the @Throttle functions, which get the context only). */
function requestOf(c: ExecutionContext): ThrottledRequest | undefined {
  const type = c.getType<string>();
  if (type === 'ws') return c.switchToWs().getClient<{ handshake?: ThrottledRequest }>().handshake;
  if (type === 'graphql')
    return c.getArgByIndex<{ req?: ThrottledRequest; reply?: { request?: ThrottledRequest } }>(2)?.req;
  return c.switchToHttp().getRequest<ThrottledRequest>();
}
const fresh = () => `t-${randomBytes(5).toString('hex')}`;

/** Every protected hook overridden, routed through `run`; the Retry-After write of setResponseHeader is its own. */
@Injectable()
class ThrowingGuard extends hookRoutedGuard(run, 'retryAfterHeader') {}

/** A RegExp of rateLimit.ignoreUserAgents whose test is the hook (a subclass: the option takes RegExp instances). */
class HookedAgentPattern extends RegExp {
  override test(agent: string): boolean {
    return run('ignoreUserAgents', () => super.test(agent));
  }
}

const dynamic =
  <T>(field: Hook, base: (context: ExecutionContext) => T) =>
  (context: ExecutionContext): T =>
    run(field, () => base(context));
/** Every value a function: a token bucket of 2 per minute (the other routes: a sliding window of 2 per minute). */
const DYNAMIC = {
  name: 'dyn',
  key: dynamic('key', (c) => `dyn:${trackerOf(requestOf(c))}`),
  limit: dynamic('limit', () => 2),
  ttl: dynamic('ttl', () => 60_000),
  cost: dynamic('cost', () => 1),
  burst: dynamic('burst', () => 2),
  blockDuration: dynamic('blockDuration', () => 0),
  algorithm: dynamic('algorithm', () => 'token-bucket' as const),
};
const LIMITED = { name: 'two', limit: 2, ttl: 60_000 };
const LISTED = { name: 'listed', limit: 2, ttl: 60_000, denyList: ['denied-user'] };

/** How many times the handlers ran: a request the guard failed must not add one. */
let handled = 0;
const ok = (): string => {
  handled++;
  return 'ok';
};

@Controller('th')
@UseGuards(ThrowingGuard)
class ThrowingController {
  @Get('limited') @Throttle(LIMITED) limited(): string {
    return ok();
  }
  @Get('listed') @Throttle(LISTED) listed(): string {
    return ok();
  }
  @Get('dynamic') @Throttle(DYNAMIC) dynamic(): string {
    return ok();
  }
  @Get('refunded')
  @Throttle({ name: 'refunded', limit: 2, ttl: 60_000, skipFailedRequests: true })
  refunded(): string {
    return ok();
  }
}

@Resolver()
@UseGuards(ThrowingGuard)
class ThrowingResolver {
  @Query(() => String) @Throttle(LIMITED) limited(): string {
    return ok();
  }
  @Query(() => String) @Throttle(LISTED) listed(): string {
    return ok();
  }
  @Query(() => String) @Throttle(DYNAMIC) dynamic(): string {
    return ok();
  }
}

@WebSocketGateway({ namespace: '/th' })
@UseGuards(ThrowingGuard)
class ThrowingGateway {
  @SubscribeMessage('limited') @Throttle(LIMITED) limited(): string {
    return ok();
  }
  @SubscribeMessage('listed') @Throttle(LISTED) listed(): string {
    return ok();
  }
  @SubscribeMessage('dynamic') @Throttle(DYNAMIC) dynamic(): string {
    return ok();
  }
}

// on the real process for the whole file; a case checks the reasons added since it began
const rejections = countUnhandledRejectionsInFile();
afterAll(closeToolkitApps);
afterEach(() => {
  current.hook = undefined;
  current.fail = undefined;
});

/** What a request got, the same shape on every transport: admitted, or the error's code (if any) and message. */
interface Outcome {
  admitted: boolean;
  code?: number | string;
  message?: string;
}
type Route = 'limited' | 'listed' | 'dynamic';

/** Sends one request on `ctx` (a Socket.IO message on a socket of the tracker's own) and says what it got. */
function transport(http: Server, port: number, sockets: Socket[]) {
  const headers = (tracker: string) => ({ 'x-tracker': tracker, 'user-agent': 'hook-test-agent' });
  const socketOf = new Map<string, Promise<Socket>>();
  const connect = (tracker: string): Promise<Socket> => {
    let socket = socketOf.get(tracker);
    if (!socket) {
      const url = `http://127.0.0.1:${port}/th`;
      socket = connectSocket(url, sockets, { forceNew: true, extraHeaders: headers(tracker) });
      socketOf.set(tracker, socket);
    }
    return socket;
  };
  return async (ctx: Ctx, route: Route, tracker: string): Promise<Outcome> => {
    if (ctx === 'http') {
      const res = await request(http).get(`/th/${route}`).set(headers(tracker)).timeout(5_000);
      if (res.status === 200) return { admitted: res.text === 'ok' };
      const body = res.body as { message?: string };
      return { admitted: false, code: res.status, message: body.message };
    }
    if (ctx === 'graphql') {
      const res = await request(http)
        .post('/graphql')
        .set(headers(tracker))
        .send({ query: `{ ${route} }` });
      const reply = res.body as GraphqlReply;
      if (reply.data?.[route] === 'ok') return { admitted: true };
      expect(reply.errors).toHaveLength(1);
      return { admitted: false, message: reply.errors?.[0].message };
    }
    const answer = await ackOrException(await connect(tracker), route);
    if ('exception' in answer) {
      const e = answer.exception as { statusCode?: number; status?: string; message?: string };
      return { admitted: false, code: e.statusCode ?? e.status, message: e.message };
    }
    return { admitted: answer.ack === 'ok' };
  };
}

/** What the request gets when the hook fails with `b`'s error, on `ctx`. */
function expectedFailure(ctx: Ctx, hook: Hook, b: Behaviour, syncOnly: boolean): Outcome {
  // a Promise from a synchronous hook is refused with InvalidOptionsError (the rejection handled, not unhandled)
  if (syncOnly && !b.sync) {
    const message = expect.stringMatching(
      hook === 'errorMessage' ? /rateLimit\.errorMessage must return a string/ : /returned a Promise/,
    ) as unknown as string;
    if (ctx === 'http') return { admitted: false, code: 500, message: 'Internal server error' };
    if (ctx === 'ws') return { admitted: false, code: 'error', message: 'Internal server error' };
    return { admitted: false, message };
  }
  if (b.plain) {
    if (ctx === 'http') return { admitted: false, code: 500, message: 'Internal server error' };
    if (ctx === 'ws') return { admitted: false, code: 'error', message: 'Internal server error' };
    return { admitted: false, message: `plain failure of ${hook}` };
  }
  if (ctx === 'graphql') return { admitted: false, message: `${hook} said no` };
  return { admitted: false, code: 418, message: `${hook} said no` };
}

const refusal = (ctx: Ctx, code: number, message: string): Outcome =>
  ctx === 'graphql' ? { admitted: false, message } : { admitted: false, code, message };

/**
 * A case: which hook fails, on which route, when in the counter's life (`admitted`: the first request; `refused`:
 * once the 2 units are used; `denied`: a tracker on the route's deny list), and how many units it leaves charged.
 */
interface HookCase {
  hook: Hook;
  route: Route;
  phase: 'admitted' | 'refused' | 'denied';
  charged: number;
  /** Where the hook runs: setHeaders / setResponseHeader need a response (none on Socket.IO). */
  contexts: Ctx[];
  /** A synchronous hook: a Promise from it is refused (InvalidOptionsError). */
  syncOnly?: boolean;
  /** RegExp#test cannot give a Promise the guard would see as one: thrown only. */
  throwOnly?: boolean;
  label?: string;
}
const ALL: Ctx[] = ['http', 'ws', 'graphql'];
const WITH_RESPONSE: Ctx[] = ['http', 'graphql'];
const CASES: HookCase[] = [
  { hook: 'getTracker', route: 'limited', phase: 'admitted', charged: 0, contexts: ALL },
  { hook: 'getTracker', route: 'listed', phase: 'admitted', charged: 0, contexts: ALL, label: 'with a deny list' },
  { hook: 'generateKey', route: 'limited', phase: 'admitted', charged: 0, contexts: ALL, syncOnly: true },
  { hook: 'getRequestResponse', route: 'limited', phase: 'admitted', charged: 0, contexts: ALL, syncOnly: true },
  { hook: 'skipIf', route: 'limited', phase: 'admitted', charged: 0, contexts: ALL },
  { hook: 'ignoreUserAgents', route: 'limited', phase: 'admitted', charged: 0, contexts: ALL, throwOnly: true },
  ...(['key', 'limit', 'ttl', 'cost', 'algorithm', 'burst', 'blockDuration'] as const).map(
    (hook): HookCase => ({ hook, route: 'dynamic', phase: 'admitted', charged: 0, contexts: ALL }),
  ),
  { hook: 'setHeaders', route: 'limited', phase: 'admitted', charged: 1, contexts: WITH_RESPONSE },
  { hook: 'setResponseHeader', route: 'limited', phase: 'admitted', charged: 1, contexts: WITH_RESPONSE },
  { hook: 'setHeaders', route: 'limited', phase: 'refused', charged: 2, contexts: WITH_RESPONSE },
  { hook: 'retryAfterHeader', route: 'limited', phase: 'refused', charged: 2, contexts: WITH_RESPONSE },
  { hook: 'throwThrottlingException', route: 'limited', phase: 'refused', charged: 2, contexts: ALL },
  { hook: 'errorMessage', route: 'limited', phase: 'refused', charged: 2, contexts: ALL, syncOnly: true },
  { hook: 'throwDeniedException', route: 'listed', phase: 'denied', charged: 0, contexts: ALL },
];

const ROWS = CASES.flatMap((c) =>
  c.contexts.flatMap((ctx) =>
    BEHAVIOURS.filter((b) => !c.throwOnly || b.sync).map(
      (b) => [`${c.hook}${c.label ? ` (${c.label})` : ''}`, c.phase, ctx, b.label, c, b] as const,
    ),
  ),
);

describe.each(PLATFORMS)('RateLimitGuard hooks that throw or reject, on %s', (platform) => {
  let http: Server;
  let send: ReturnType<typeof transport>;
  let rl: RateLimitService;
  let log: ReturnType<typeof recordingLogger>;
  const sockets: Socket[] = [];

  beforeAll(async () => {
    let port: number;
    ({ log, http, port, rl } = await bootLoggedHttpApp(platform, 'th', {
      rateLimit: {
        skipIf: dynamic('skipIf', () => false),
        ignoreUserAgents: [new HookedAgentPattern('^never-this-agent$')],
        errorMessage: () => run('errorMessage', () => 'Too Many Requests'),
      },
      imports: [graphqlModule(platform)],
      controllers: [ThrowingController],
      providers: [ThrowingGuard, ThrowingResolver, ThrowingGateway],
    }));
    send = transport(http, port, sockets);
  });
  afterAll(async () => {
    for (const s of sockets.splice(0)) s.disconnect();
    await closeToolkitApps();
  });

  it.each(ROWS)('%s failing when %s, on %s: it %s', async (_h, _p, ctx, _b, c, b) => {
    const tracker = c.phase === 'denied' ? 'denied-user' : fresh();
    // the units of a refused case are used up first, by requests no hook fails
    if (c.phase === 'refused') {
      for (let i = 0; i < 2; i++) expect(await send(ctx, c.route, tracker)).toEqual({ admitted: true });
    }
    const stats = rl.stats();
    const [errors, warnings, seen, before] = [log.errors.length, log.warnings.length, rejections.count, handled];
    current.ctx = ctx;
    current.hook = c.hook;
    current.fail = failing(b);

    expect(await send(ctx, c.route, tracker)).toEqual(expectedFailure(ctx, c.hook, b, c.syncOnly === true));
    expect(handled).toBe(before);
    await settleRejections();
    expect(rejections.reasons.slice(seen)).toEqual([]);
    // a plain Error is logged by the transport's exception handler (HTTP, Socket.IO), never hidden
    if (b.plain && b.sync === true && ctx !== 'graphql') {
      expect(log.errors.slice(errors).join('\n')).toContain(`plain failure of ${c.hook}`);
    }
    // never a transport failure: nothing failed open, no Redis error counted, nothing said about Redis
    const now = rl.stats();
    expect(now.failedOpen - stats.failedOpen).toBe(0);
    expect(now.failedClosed - stats.failedClosed).toBe(0);
    expect(now.replyErrors - stats.replyErrors).toBe(0);
    expect(now.allowed - stats.allowed).toBe(c.phase === 'admitted' ? c.charged : 0);
    expect(now.denied - stats.denied).toBe(c.phase === 'refused' ? 1 : 0);
    expect([...log.errors.slice(errors), ...log.warnings.slice(warnings)].join('\n')).not.toMatch(
      /unavailable|Redis|fail(ed)? open/i,
    );

    // the next requests are decided as usual: the units left admitted, then the standard refusal
    current.hook = undefined;
    if (c.phase === 'denied') {
      expect(await send(ctx, c.route, tracker)).toEqual(refusal(ctx, 403, 'Forbidden'));
      return;
    }
    const outcomes: Outcome[] = [];
    for (let i = 0; i < 3 - c.charged; i++) outcomes.push(await send(ctx, c.route, tracker));
    expect(outcomes).toEqual([
      ...Array.from({ length: 2 - c.charged }, () => ({ admitted: true })),
      refusal(ctx, 429, 'Too Many Requests'),
    ]);
  });

  // A hook of the user's that calls Redis itself (a session read in getTracker) and fails with the toolkit's own
  // RedisUnavailableError: that error is the request's (HTTP: its 503, the http-errors shape), not the limiter's
  // outage. Nothing fails open, the failure policy counts and says nothing, and the limiter still decides.
  it.each(ALL)(
    'getTracker failing with a RedisUnavailableError of its own, on %s: not the limiter outage',
    async (ctx) => {
      const tracker = fresh();
      const stats = rl.stats();
      const warnings = log.warnings.length;
      current.ctx = ctx;
      current.hook = 'getTracker';
      current.fail = () => Promise.reject(new RedisUnavailableError('the session store did not answer'));
      const expected: Record<Ctx, Outcome> = {
        http: { admitted: false, code: 503, message: 'Service Unavailable' },
        ws: { admitted: false, code: 'error', message: 'Internal server error' },
        graphql: { admitted: false, message: 'the session store did not answer' },
      };
      expect(await send(ctx, 'limited', tracker)).toEqual(expected[ctx]);
      const now = rl.stats();
      expect([now.failedOpen, now.failedClosed, now.allowed]).toEqual([
        stats.failedOpen,
        stats.failedClosed,
        stats.allowed,
      ]);
      expect(log.warnings.slice(warnings).join('\n')).not.toContain('Redis unavailable');
      current.hook = undefined;
      expect(await send(ctx, 'limited', tracker)).toEqual({ admitted: true });
    },
  );

  // skipFailedRequests: the request is charged, and given back when its response fails. A setHeaders or
  // setResponseHeader that throws after the charge fails the response (the hook's error): the charge is given back.
  it.each(['setHeaders', 'setResponseHeader'] as const)(
    'skipFailedRequests and a %s that throws after the charge: the failed request is refunded',
    async (hook) => {
      const tracker = fresh();
      current.ctx = 'http';
      current.hook = hook;
      current.fail = failing(BEHAVIOURS[0]);
      const failed = await request(http).get('/th/refunded').set('x-tracker', tracker);
      expect(failed.status).toBe(418);
      current.hook = undefined;
      const policy = { limit: 2, ttl: 60_000 };
      const check = { key: tracker, name: 'refunded', scope: 'ThrowingController.refunded:refunded', policy };
      const remaining = async () => (await rl.peekAll([check])).results[0].remaining;
      expect(await waitFor(async () => (await remaining()) === 2, 3_000)).toBe(true);
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++)
        statuses.push((await request(http).get('/th/refunded').set('x-tracker', tracker)).status);
      expect(statuses).toEqual([200, 200, 429]);
    },
  );
});

// --- unavailableError: Redis down, failOpen: false ---------------------------------------------------------------

describe.each(PLATFORMS)('unavailableError that throws or rejects, Redis down (failOpen: false), on %s', (platform) => {
  let server: RedisServerHandle;
  let send: ReturnType<typeof transport>;
  let rl: RateLimitService;
  const sockets: Socket[] = [];

  beforeAll(async () => {
    server = await startRedisServer();
    const app = await bootToolkitApp({
      target: { url: server.url },
      platform,
      http: true,
      logger: recordingLogger().logger,
      commandTimeout: 300,
      maxReconnectDelay: 100,
      keyPrefix: `rtk-thu${randomBytes(4).toString('hex')}:`,
      rateLimit: { failOpen: false, warnIntervalMs: 60_000 },
      imports: [graphqlModule(platform)],
      controllers: [ThrowingController],
      providers: [ThrowingGuard, ThrowingResolver, ThrowingGateway],
    });
    const http = app.app.getHttpServer() as Server;
    send = transport(http, (http.address() as { port: number }).port, sockets);
    rl = app.get(RateLimitService);
    expect(await send('http', 'limited', fresh())).toEqual({ admitted: true });
    await server.kill();
  });
  afterAll(async () => {
    for (const s of sockets.splice(0)) s.disconnect();
    await closeToolkitApps();
    await server.stop();
  });

  it.each(ALL.flatMap((ctx) => BEHAVIOURS.map((b) => [ctx, b.label, b] as const)))(
    'on %s, it %s: the request gets its error; failed closed, never open; the next one gets the standard 503',
    async (ctx, _l, b) => {
      const stats = rl.stats();
      const [seen, before] = [rejections.count, handled];
      current.ctx = ctx;
      current.hook = 'unavailableError';
      current.fail = failing(b);
      expect(await send(ctx, 'limited', fresh())).toEqual(expectedFailure(ctx, 'unavailableError', b, false));
      expect(handled).toBe(before);
      await settleRejections();
      expect(rejections.reasons.slice(seen)).toEqual([]);
      expect(rl.stats().failedOpen).toBe(stats.failedOpen);
      expect(rl.stats().failedClosed).toBe(stats.failedClosed + 1);
      current.hook = undefined;
      expect(await send(ctx, 'limited', fresh())).toEqual(
        refusal(ctx, 503, 'Rate limiting is unavailable, try again later'),
      );
    },
  );
});

// --- a guard that ran before for the same request ------------------------------------------------------------------

describe.each(PLATFORMS)('a global RateLimitGuard before the failing subclass, on %s', (platform) => {
  // The global guard (default getTracker: the client address) charges the route's counter first; the controller's
  // ThrowingGuard (its own tracker, x-tracker) then fails. The charge the global guard made stays, as any charge of an
  // admitted request that then failed; a skipFailedRequests policy of it is given back, the response being an error.
  it.each([
    ['limited', 'ThrowingController.limited:two', 1],
    ['refunded', 'ThrowingController.refunded:refunded', 2],
  ] as const)('on /th/%s: the global charge is left as the docs say (%s: %i left)', async (route, scope, left) => {
    const app = await createToolkitApp({
      platform,
      http: true,
      keyPrefix: `rtk-thg${randomBytes(4).toString('hex')}:`,
      controllers: [ThrowingController],
      providers: [ThrowingGuard, { provide: APP_GUARD, useClass: RateLimitGuard }],
    });
    const rl = app.get(RateLimitService);
    current.ctx = 'http';
    current.hook = 'getTracker';
    current.fail = failing(BEHAVIOURS[1]);
    const res = await request(app.app.getHttpServer() as Server)
      .get(`/th/${route}`)
      .set('x-tracker', fresh());
    expect(res.status).toBe(418);
    const check = { key: '127.0.0.1', scope, policy: { limit: 2, ttl: 60_000 } };
    const remaining = async () => (await rl.peekAll([check])).results[0].remaining;
    expect(await waitFor(async () => (await remaining()) === left, 3_000)).toBe(true);
    expect(rl.stats()).toMatchObject({ allowed: 1, failedOpen: 0 });
    await app.close();
  });
});
