/**
 * An outsider's review of RateLimitGuard as a user who subclasses it (the @nestjs/throttler way), on real Redis, over
 * HTTP on Express and Fastify, Socket.IO and GraphQL (Apollo on Express, Mercurius on Fastify): every protected hook
 * overridden to throw (synchronously, or by rejecting), to give a value of the wrong type, and for the throw* hooks to
 * return without throwing; `rateLimit.skipIf` / `errorMessage` and @Throttle values given as functions likewise.
 *
 * What must hold: a request the limit or a deny list refuses is never let through; a hook's own error reaches the
 * client as that error (no crash, no unhandled rejection); a wrong-type value is a typed error naming the hook.
 * test/foundation/arguments-everywhere-2.hostile.spec.ts and guard-generate-key.spec.ts hold the wrong-type values of
 * a key function, of getTracker without access lists and of generateKey (null, 42, objects): not repeated here.
 *
 * The choice for a throwThrottlingException / throwDeniedException that returns without throwing (@nestjs/throttler
 * then lets the request through): the guard refuses anyway, with its standard refusal (429 `RateLimitHttpException`,
 * 403 `ForbiddenException`, or their WsException payloads), and logs once per guard an error naming the hook. The
 * client gets the answer the limit means on every transport; the developer gets the word. A 500 would have told the
 * client less (a Socket.IO client gets "Internal server error" for any error that is not a WsException).
 */
import 'reflect-metadata';
import { Controller, Get, HttpException, Injectable, UseGuards, type ExecutionContext } from '@nestjs/common';
import { Query, Resolver } from '@nestjs/graphql';
import { SubscribeMessage, WebSocketGateway, WsException } from '@nestjs/websockets';
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { Socket } from 'socket.io-client';
import request from 'supertest';
import { RateLimitService, Throttle } from '../../lib/index.js';
import type { ThrottledRequest } from '../../lib/advanced.js';
import { recordingLogger } from '../support/recording-logger.js';
import { bootLoggedHttpApp, type GraphqlReply } from '../support/rate-limit-http.js';
import { type GuardHook, graphqlModule, hookRoutedGuard, trackerOf } from '../support/rate-limit-hooks.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { ackOrException, connectSocket } from '../support/socket-io.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { closeToolkitApps, PLATFORMS } from '../support/toolkit-app.js';
import { countUnhandledRejectionsInFile, settleRejections } from '../support/unhandled.js';

/** The guard's hooks, and the option functions: rateLimit's and a @Throttle policy's. */
type Hook = GuardHook | 'skipIf' | 'errorMessage' | 'key' | 'limit' | 'ttl' | 'cost' | 'algorithm';

/** What an overridden hook does instead of its default; `base` runs the default (super's, or the test's). */
type Behaviour = (hook: Hook, base: () => unknown) => unknown;

/** The behaviours of the test running now; a hook without one does what the default does. */
const hooks: Partial<Record<Hook, Behaviour>> = {};
const run = (hook: Hook, base: () => unknown): never => {
  const behaviour = hooks[hook];
  return (behaviour ? behaviour(hook, base) : base()) as never;
};

/** A hook's own error: it must reach the HTTP client as a 418 with this body. */
const said = (hook: Hook) => new HttpException({ statusCode: 418, message: `${hook} said no` }, 418);
const throwsSync: Behaviour = (hook) => {
  throw said(hook);
};
const rejects: Behaviour = (hook) => Promise.reject(said(hook));
const returns =
  (value: unknown): Behaviour =>
  () =>
    value;
const resolves =
  (value: unknown): Behaviour =>
  () =>
    Promise.resolve(value);
/** An `async` override that does what the default does, a turn later. */
const asyncBase: Behaviour = async (_hook, base) => {
  await null;
  return base();
};
const THROWS: [string, Behaviour][] = [
  ['throws', throwsSync],
  ['rejects', rejects],
];
/** A throw* hook that returns without throwing: an `async` override that forgot `throw`, a sync one, a value. */
const RETURNS: [string, Behaviour][] = [
  ['resolves undefined', resolves(undefined)],
  ['returns undefined synchronously', returns(undefined)],
  ['resolves 42', resolves(42)],
  ['returns null', returns(null)],
  ['resolves an object', resolves({ refused: false })],
];

const fresh = () => `u-${randomBytes(5).toString('hex')}`;

/** Every protected hook overridden, routed through `run` (its tracker: the X-Tracker header). */
@Injectable()
class HookGuard extends hookRoutedGuard(run) {}

/** A @Throttle value given as a function: the test's behaviour, else `base`. */
const dynamic =
  <T>(field: Hook, base: (context: ExecutionContext) => T) =>
  (context: ExecutionContext): T =>
    run(field, () => base(context));

/** How many times each handler ran: a refused request must not add one. */
const handled = { limited: 0, denied: 0, dynamic: 0, gql: 0, gqlDenied: 0, ws: 0, wsDenied: 0, outage: 0 };

@Controller('hk')
@UseGuards(HookGuard)
class HookController {
  @Get('limited')
  @Throttle({ name: 'one', limit: 1, ttl: 60_000 })
  limited(): string {
    handled.limited++;
    return 'ok';
  }

  @Get('denied')
  @Throttle({ name: 'listed', limit: 100, ttl: 60_000, denyList: ['denied-user'] })
  denied(): string {
    handled.denied++;
    return 'ok';
  }

  @Get('dynamic')
  @Throttle({
    name: 'dyn',
    key: dynamic('key', (c) => `dyn:${trackerOf(c.switchToHttp().getRequest<ThrottledRequest>())}`),
    limit: dynamic('limit', () => 1),
    ttl: dynamic('ttl', () => 60_000),
    cost: dynamic('cost', () => 1),
    algorithm: dynamic('algorithm', () => 'fixed-window' as const),
  })
  dynamic(): string {
    handled.dynamic++;
    return 'ok';
  }
}

@Resolver()
@UseGuards(HookGuard)
class HookResolver {
  @Query(() => String)
  @Throttle({ name: 'one', limit: 1, ttl: 60_000 })
  hkLimited(): string {
    handled.gql++;
    return 'ok';
  }

  @Query(() => String)
  @Throttle({ name: 'listed', limit: 100, ttl: 60_000, denyList: ['denied-user'] })
  hkDenied(): string {
    handled.gqlDenied++;
    return 'ok';
  }
}

@WebSocketGateway({ namespace: '/hk' })
@UseGuards(HookGuard)
class HookGateway {
  @SubscribeMessage('limited')
  @Throttle({ name: 'one', limit: 1, ttl: 60_000 })
  limited(): string {
    handled.ws++;
    return 'ok';
  }

  @SubscribeMessage('denied')
  @Throttle({ name: 'listed', limit: 100, ttl: 60_000, denyList: ['denied-user'] })
  denied(): string {
    handled.wsDenied++;
    return 'ok';
  }
}

@Controller('outage')
@UseGuards(HookGuard)
class OutageController {
  @Get()
  @Throttle({ name: 'strict', limit: 100, ttl: 60_000 })
  get(): string {
    handled.outage++;
    return 'ok';
  }
}

// on the real process for the whole file; a case checks the reasons added since it began (unhandledSince)
const rejections = countUnhandledRejectionsInFile();
afterAll(closeToolkitApps);
afterEach(() => {
  for (const key of Object.keys(hooks)) delete hooks[key as Hook];
});

/** Unhandled rejections since `from` (a `rejections.count`), once the turns that would report them have passed. */
async function unhandledSince(from: number): Promise<string[]> {
  await settleRejections();
  return rejections.reasons.slice(from);
}

const delta = (before: typeof handled) =>
  Object.fromEntries(
    Object.entries(handled)
      .map(([k, v]) => [k, v - before[k as keyof typeof handled]])
      .filter(([, v]) => v !== 0),
  );

describe.each(PLATFORMS)('a RateLimitGuard subclass on %s', (platform) => {
  let http: Server;
  let port: number;
  let log: ReturnType<typeof recordingLogger>;
  let rl: RateLimitService;
  const sockets: Socket[] = [];

  beforeAll(async () => {
    ({ log, http, port, rl } = await bootLoggedHttpApp(platform, 'hk', {
      rateLimit: {
        // a tracker on both lists is denied; a range makes the lists read the tracker as an address too
        allowList: ['both-user'],
        denyList: ['both-user', '10.9.9.0/24'],
        skipIf: dynamic('skipIf', () => false),
        errorMessage: () => run('errorMessage', () => 'Too Many Requests'),
      },
      imports: [graphqlModule(platform)],
      controllers: [HookController],
      providers: [HookGuard, HookResolver, HookGateway],
    }));
  });
  afterAll(() => {
    for (const s of sockets.splice(0)) s.disconnect();
  });

  const get = (path: string, tracker: string) => request(http).get(path).set('x-tracker', tracker).timeout(5_000);
  const errorsLogged = (from: number) => log.errors.slice(from).join('\n');

  describe('throwThrottlingException', () => {
    it.each(RETURNS)(
      'that %s instead of throwing: the refused requests still get the standard 429, never the handler',
      async (_l, behaviour) => {
        hooks.throwThrottlingException = behaviour;
        const t = fresh();
        const before = { ...handled };
        const replies = [];
        for (let i = 0; i < 3; i++) replies.push(await get('/hk/limited', t));
        expect(replies.map((r) => r.status)).toEqual([200, 429, 429]);
        expect(replies[1].body).toEqual({
          statusCode: 429,
          message: 'Too Many Requests',
          retryAfterMs: expect.any(Number),
        });
        expect(Number(replies[1].headers['retry-after'])).toBeGreaterThanOrEqual(55);
        expect(delta(before)).toEqual({ limited: 1 });
      },
    );

    it('that returns: an error naming the hook is logged once per guard, not once per request', async () => {
      hooks.throwThrottlingException = resolves(undefined);
      const t = fresh();
      for (let i = 0; i < 4; i++) await get('/hk/limited', t);
      const lines = log.errors.filter((l) =>
        l.includes('HookGuard.throwThrottlingException returned without throwing'),
      );
      expect(lines).toHaveLength(1);
    });

    it.each(THROWS)('that %s its own HttpException: the client gets that error', async (_l, behaviour) => {
      hooks.throwThrottlingException = behaviour;
      const t = fresh();
      const before = { ...handled };
      expect((await get('/hk/limited', t)).status).toBe(200);
      const refused = await get('/hk/limited', t);
      expect(refused.status).toBe(418);
      expect(refused.body).toEqual({ statusCode: 418, message: 'throwThrottlingException said no' });
      expect(delta(before)).toEqual({ limited: 1 });
    });

    it('that throws a plain Error: a 500 with that error logged (not swallowed)', async () => {
      hooks.throwThrottlingException = () => Promise.reject(new Error('plain failure of throwThrottlingException'));
      const t = fresh();
      const from = log.errors.length;
      await get('/hk/limited', t);
      expect((await get('/hk/limited', t)).status).toBe(500);
      expect(errorsLogged(from)).toContain('plain failure of throwThrottlingException');
    });
  });

  describe('throwDeniedException', () => {
    it.each(RETURNS)(
      'that %s instead of throwing: a tracker on a policy denyList still gets the standard 403',
      async (_l, behaviour) => {
        hooks.throwDeniedException = behaviour;
        const before = { ...handled };
        const replies = [await get('/hk/denied', 'denied-user'), await get('/hk/denied', 'denied-user')];
        expect(replies.map((r) => r.status)).toEqual([403, 403]);
        expect(replies[0].body).toEqual({ statusCode: 403, message: 'Forbidden' });
        expect(replies[0].headers['retry-after']).toBeUndefined();
        expect(delta(before)).toEqual({});
      },
    );

    it.each([
      ['on both module lists', 'both-user'],
      ['in a denied range of the module list', '10.9.9.7'],
    ])('that returns: a tracker %s is still 403, never let through', async (_l, tracker) => {
      hooks.throwDeniedException = resolves(undefined);
      const stats = rl.stats();
      const before = { ...handled };
      const replies = [await get('/hk/limited', tracker), await get('/hk/limited', tracker)];
      expect(replies.map((r) => r.status)).toEqual([403, 403]);
      expect(delta(before)).toEqual({});
      expect(rl.stats().allowed).toBe(stats.allowed);
    });

    it('that returns: an error naming the hook is logged once per guard', async () => {
      hooks.throwDeniedException = returns(undefined);
      for (let i = 0; i < 3; i++) await get('/hk/denied', 'denied-user');
      const lines = log.errors.filter((l) => l.includes('HookGuard.throwDeniedException returned without throwing'));
      expect(lines).toHaveLength(1);
    });

    it.each(THROWS)('that %s its own exception (how to "answer otherwise"): the client gets it', async (_l, b) => {
      hooks.throwDeniedException = b;
      const before = { ...handled };
      const denied = await get('/hk/denied', 'denied-user');
      expect(denied.status).toBe(418);
      expect(denied.body).toEqual({ statusCode: 418, message: 'throwDeniedException said no' });
      expect(delta(before)).toEqual({});
    });
  });

  describe('getTracker', () => {
    it.each(THROWS)('that %s: the client gets its error, nothing is counted', async (_l, behaviour) => {
      hooks.getTracker = behaviour;
      const stats = rl.stats();
      const before = { ...handled };
      const replies = [await get('/hk/limited', fresh()), await get('/hk/dynamic', fresh())];
      expect(replies.map((r) => r.status)).toEqual([418, 418]);
      expect(replies[0].body).toEqual({ statusCode: 418, message: 'getTracker said no' });
      expect(delta(before)).toEqual({});
      expect(rl.stats()).toMatchObject({ allowed: stats.allowed, denied: stats.denied });
    });

    // with a range on an access list the tracker is read as an address (`tracker.split`): a value that is not a string
    // was a bare TypeError there, naming neither the hook nor the value
    it.each([
      ['42', 42],
      ['undefined', undefined],
      ['an object', { id: 7 }],
      ["''", ''],
    ])('giving %s (access lists in use): a 500, InvalidKeyError naming HookGuard.getTracker', async (_l, v) => {
      hooks.getTracker = resolves(v);
      const from = log.errors.length;
      const before = { ...handled };
      expect((await get('/hk/limited', fresh())).status).toBe(500);
      expect(delta(before)).toEqual({});
      const logged = errorsLogged(from);
      expect(logged).toContain('InvalidKeyError');
      expect(logged).toMatch(/HookGuard\.getTracker: the tracker must be a non-empty string/);
      expect(logged).not.toMatch(/is not a function|Cannot read properties/);
    });
  });

  describe('generateKey', () => {
    it('that throws: the client gets its error, nothing is counted', async () => {
      hooks.generateKey = throwsSync;
      const stats = rl.stats();
      const before = { ...handled };
      const res = await get('/hk/limited', fresh());
      expect(res.status).toBe(418);
      expect(res.body).toEqual({ statusCode: 418, message: 'generateKey said no' });
      expect(delta(before)).toEqual({});
      expect(rl.stats()).toMatchObject({ allowed: stats.allowed, denied: stats.denied });
    });

    it.each([
      ['a rejected promise', rejects],
      ['a Promise of its scope (an async override)', asyncBase],
    ])(
      'returning %s: a 500, InvalidOptionsError saying it returned a Promise; no unhandled rejection',
      async (_l, b) => {
        hooks.generateKey = b;
        const from = log.errors.length;
        const seen = rejections.count;
        const before = { ...handled };
        expect((await get('/hk/limited', fresh())).status).toBe(500);
        expect(delta(before)).toEqual({});
        expect(errorsLogged(from)).toMatch(/InvalidOptionsError: HookGuard\.generateKey .*returned a Promise/);
        expect(await unhandledSince(seen)).toEqual([]);
      },
    );
  });

  describe('getRequestResponse', () => {
    it('that throws: the client gets its error, nothing is counted', async () => {
      hooks.getRequestResponse = throwsSync;
      const stats = rl.stats();
      const res = await get('/hk/limited', fresh());
      expect(res.status).toBe(418);
      expect(res.body).toEqual({ statusCode: 418, message: 'getRequestResponse said no' });
      expect(rl.stats()).toMatchObject({ allowed: stats.allowed, denied: stats.denied });
    });

    it.each<[string, Behaviour]>([
      ['undefined', returns(undefined)],
      ['null', returns(null)],
      ['42', returns(42)],
      ['{ } (no req)', returns({})],
      ['{ req: null }', returns({ req: null, res: undefined })],
      ["{ req: 'req' }", returns({ req: 'req', res: undefined })],
      ['{ req, res: 42 }', (_h, base) => ({ ...(base() as object), res: 42 })],
      ['a Promise of { req, res } (an async override)', asyncBase],
      ['a rejected promise', rejects],
    ])(
      'returning %s: a 500, InvalidOptionsError naming HookGuard.getRequestResponse; never let through',
      async (_l, b) => {
        hooks.getRequestResponse = b;
        const from = log.errors.length;
        const seen = rejections.count;
        const stats = rl.stats();
        const before = { ...handled };
        const replies = [await get('/hk/limited', fresh()), await get('/hk/limited', fresh())];
        expect(replies.map((r) => r.status)).toEqual([500, 500]);
        expect(delta(before)).toEqual({});
        expect(rl.stats()).toMatchObject({ allowed: stats.allowed, denied: stats.denied });
        expect(errorsLogged(from)).toMatch(/InvalidOptionsError: HookGuard\.getRequestResponse (must|returned)/);
        expect(await unhandledSince(seen)).toEqual([]);
      },
    );
  });

  describe('setResponseHeader and setHeaders', () => {
    it.each([
      ['setResponseHeader', 'throws', throwsSync],
      ['setResponseHeader', 'rejects (an async override)', rejects],
      ['setHeaders', 'throws', throwsSync],
      ['setHeaders', 'rejects (an async override)', rejects],
    ] as const)(
      '%s that %s: the client gets its error, admitted or refused; no unhandled rejection',
      async (hook, _l, b) => {
        hooks[hook] = b;
        const seen = rejections.count;
        const before = { ...handled };
        const t = fresh();
        const replies = [await get('/hk/limited', t), await get('/hk/limited', t)];
        expect(replies.map((r) => r.status)).toEqual([418, 418]);
        expect(replies[0].body).toEqual({ statusCode: 418, message: `${hook} said no` });
        expect(delta(before)).toEqual({});
        expect(await unhandledSince(seen)).toEqual([]);
      },
    );

    // TypeScript takes `protected override async setHeaders(...): Promise<void>` for a `void` method: such an override
    // that awaits anything wrote its headers after the response was sent (lost; Express: ERR_HTTP_HEADERS_SENT)
    it.each(['setHeaders', 'setResponseHeader'] as const)(
      'an async %s that writes after an await: its headers are on the response (awaited)',
      async (hook) => {
        hooks[hook] = async (_h, base) => {
          await new Promise((r) => setTimeout(r, 30));
          return base();
        };
        const seen = rejections.count;
        const t = fresh();
        const admitted = await get('/hk/limited', t);
        const refused = await get('/hk/limited', t);
        expect([admitted.status, refused.status]).toEqual([200, 429]);
        expect(admitted.headers.ratelimit).toBe('"one";r=0;t=60');
        expect(refused.headers.ratelimit).toMatch(/^"one";r=0;t=(59|60)$/);
        expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(55);
        expect(await unhandledSince(seen)).toEqual([]);
      },
    );
  });

  describe('rateLimit.skipIf', () => {
    it.each(THROWS)('that %s: the client gets its error, never skipped', async (_l, b) => {
      hooks.skipIf = b;
      const before = { ...handled };
      const res = await get('/hk/limited', fresh());
      expect(res.status).toBe(418);
      expect(res.body).toEqual({ statusCode: 418, message: 'skipIf said no' });
      expect(delta(before)).toEqual({});
    });

    // a truthy value skipped the request uncounted, without a word
    it.each<[string, Behaviour]>([
      ["'yes'", returns('yes')],
      ['1', returns(1)],
      ['an object', returns({ skip: false })],
      ["a Promise of 'false'", resolves('false')],
    ])('giving %s: a 500, InvalidOptionsError naming rateLimit.skipIf; neither skipped nor counted', async (_l, b) => {
      hooks.skipIf = b;
      const from = log.errors.length;
      const stats = rl.stats();
      const before = { ...handled };
      const t = fresh();
      const replies = [await get('/hk/limited', t), await get('/hk/limited', t)];
      expect(replies.map((r) => r.status)).toEqual([500, 500]);
      expect(delta(before)).toEqual({});
      expect(rl.stats()).toMatchObject({ allowed: stats.allowed, denied: stats.denied });
      expect(errorsLogged(from)).toMatch(/InvalidOptionsError: rateLimit\.skipIf must return true or false/);
    });

    it.each<[string, Behaviour, number[]]>([
      ['true', returns(true), [200, 200, 200]],
      ['a Promise of true', resolves(true), [200, 200, 200]],
      ['false', returns(false), [200, 429, 429]],
      ['a Promise of false', resolves(false), [200, 429, 429]],
      // `req.user?.isInternal` without a user: counted, as false (the safe side)
      ['undefined', returns(undefined), [200, 429, 429]],
      ['a Promise of null', resolves(null), [200, 429, 429]],
    ])('giving %s: skipped, or counted', async (_l, b, codes) => {
      hooks.skipIf = b;
      const t = fresh();
      const replies = [];
      for (let i = 0; i < 3; i++) replies.push((await get('/hk/limited', t)).status);
      expect(replies).toEqual(codes);
    });
  });

  describe('rateLimit.errorMessage', () => {
    it('that throws: the refused request gets its error', async () => {
      hooks.errorMessage = throwsSync;
      const t = fresh();
      await get('/hk/limited', t);
      const refused = await get('/hk/limited', t);
      expect(refused.status).toBe(418);
      expect(refused.body).toEqual({ statusCode: 418, message: 'errorMessage said no' });
    });

    // it answered a 429 whose message was 42, an object, or missing, without a word
    it.each<[string, Behaviour]>([
      ['42', returns(42)],
      ['undefined', returns(undefined)],
      ['an object', returns({ text: 'slow down' })],
      ['a Promise of a string', resolves('slow down')],
    ])('giving %s: the refused request is a 500, InvalidOptionsError naming rateLimit.errorMessage', async (_l, b) => {
      hooks.errorMessage = b;
      const from = log.errors.length;
      const seen = rejections.count;
      const t = fresh();
      const before = { ...handled };
      const replies = [await get('/hk/limited', t), await get('/hk/limited', t)];
      expect(replies.map((r) => r.status)).toEqual([200, 500]);
      expect(delta(before)).toEqual({ limited: 1 });
      expect(errorsLogged(from)).toMatch(/InvalidOptionsError: rateLimit\.errorMessage must return a string/);
      expect(await unhandledSince(seen)).toEqual([]);
    });
  });

  describe('@Throttle values given as functions', () => {
    it.each([
      ['key', 'throws', throwsSync],
      ['key', 'rejects', rejects],
      ['limit', 'throws', throwsSync],
      ['ttl', 'rejects', rejects],
    ] as const)('a %s function that %s: the client gets its error, nothing counted', async (field, _l, b) => {
      hooks[field] = b;
      const stats = rl.stats();
      const before = { ...handled };
      const res = await get('/hk/dynamic', fresh());
      expect(res.status).toBe(418);
      expect(res.body).toEqual({ statusCode: 418, message: `${field} said no` });
      expect(delta(before)).toEqual({});
      expect(rl.stats()).toMatchObject({ allowed: stats.allowed, denied: stats.denied });
    });

    // the service's error named `policy.limit` (or `policies[i]`, an index among the policies left to charge): neither
    // the @Throttle policy nor its route
    it.each<[Hook, unknown, string]>([
      ['limit', '5', 'limit'],
      ['limit', undefined, 'limit'],
      ['limit', 0, 'limit'],
      ['ttl', -1, 'ttl'],
      ['cost', 2.5, 'cost'],
      ['cost', 5, 'cost'],
      ['algorithm', 'leaky-bucket', 'algorithm'],
    ])(
      'a %s function giving %p: a 500, InvalidOptionsError naming the policy, its route and the field',
      async (field, v, shown) => {
        hooks[field] = resolves(v);
        const from = log.errors.length;
        const before = { ...handled };
        expect((await get('/hk/dynamic', fresh())).status).toBe(500);
        expect(delta(before)).toEqual({});
        expect(errorsLogged(from)).toMatch(
          new RegExp(
            `InvalidOptionsError: HookController\\.dynamic: rate-limit policy "dyn"\\.${shown} \\(a function, resolved`,
          ),
        );
      },
    );

    it('the message, in full (the form docs/rate-limit.md shows)', async () => {
      hooks.cost = returns(5);
      const from = log.errors.length;
      expect((await get('/hk/dynamic', fresh())).status).toBe(500);
      expect(errorsLogged(from)).toContain(
        'InvalidOptionsError: HookController.dynamic: rate-limit policy "dyn".cost (a function, resolved per request) ' +
          'must be an integer from 0 to 1 (a larger cost could never be allowed), got 5',
      );
    });
  });

  describe('on Socket.IO', () => {
    const connect = (tracker: string): Promise<Socket> =>
      connectSocket(`http://127.0.0.1:${port}/hk`, sockets, { forceNew: true, extraHeaders: { 'x-tracker': tracker } });
    /** The handler's answer, or the `exception` the guard's refusal sent, whichever comes first. */
    const ask = (socket: Socket, event: string) => ackOrException(socket, event);

    it('throwThrottlingException that returns: the refused message still gets the 429 exception, never the handler', async () => {
      hooks.throwThrottlingException = resolves(undefined);
      const socket = await connect(fresh());
      const before = { ...handled };
      const answers = [await ask(socket, 'limited'), await ask(socket, 'limited')];
      expect(answers[0]).toEqual({ ack: 'ok' });
      expect(answers[1]).toEqual({
        exception: { statusCode: 429, message: 'Too Many Requests', retryAfterMs: expect.any(Number) },
      });
      expect(delta(before)).toEqual({ ws: 1 });
    });

    it('throwDeniedException that returns: a denied tracker still gets the 403 exception', async () => {
      hooks.throwDeniedException = returns(undefined);
      const socket = await connect('denied-user');
      const before = { ...handled };
      expect(await ask(socket, 'denied')).toEqual({ exception: { statusCode: 403, message: 'Forbidden' } });
      expect(delta(before)).toEqual({});
    });

    it.each(THROWS)('getTracker that %s a WsException: the client gets its payload', async (_l, b) => {
      hooks.getTracker = (hook) => {
        const error = new WsException({ statusCode: 418, message: `${hook} said no` });
        if (b === throwsSync) throw error;
        return Promise.reject(error);
      };
      const socket = await connect(fresh());
      const before = { ...handled };
      expect(await ask(socket, 'limited')).toEqual({ exception: { statusCode: 418, message: 'getTracker said no' } });
      expect(delta(before)).toEqual({});
    });
  });

  describe('on GraphQL', () => {
    const ask = (query: string, tracker: string) =>
      request(http).post('/graphql').set('x-tracker', tracker).send({ query }).timeout(5_000);

    it('throwThrottlingException that returns: the refused query still gets Too Many Requests (429), Retry-After', async () => {
      hooks.throwThrottlingException = resolves(undefined);
      const t = fresh();
      const before = { ...handled };
      const replies = [await ask('{ hkLimited }', t), await ask('{ hkLimited }', t)];
      expect((replies[0].body as GraphqlReply).data?.hkLimited).toBe('ok');
      const refused = replies[1].body as GraphqlReply;
      expect(refused.data ?? null).toBeNull();
      expect(refused.errors?.map((e) => e.message)).toEqual(['Too Many Requests']);
      // what the doc says of the extensions: Apollo carries the 429 and the body there; Mercurius sends no extensions
      // for an error that is not its own (the doc said "extensions carry the 429" of both)
      if (platform === 'express') {
        expect(refused.errors?.[0].extensions).toMatchObject({
          status: 429,
          originalError: { statusCode: 429, retryAfterMs: expect.any(Number) },
        });
      } else {
        expect(refused.errors?.[0].extensions).toBeUndefined();
      }
      expect(Number(replies[1].headers['retry-after'])).toBeGreaterThanOrEqual(55);
      expect(delta(before)).toEqual({ gql: 1 });
    });

    it('throwDeniedException that returns: a denied tracker still gets Forbidden', async () => {
      hooks.throwDeniedException = resolves(undefined);
      const before = { ...handled };
      const reply = (await ask('{ hkDenied }', 'denied-user')).body as GraphqlReply;
      expect(reply.data ?? null).toBeNull();
      expect(reply.errors?.map((e) => e.message)).toEqual(['Forbidden']);
      expect(delta(before)).toEqual({});
    });

    it('setHeaders that rejects: the query gets its error; no unhandled rejection', async () => {
      hooks.setHeaders = rejects;
      const seen = rejections.count;
      const before = { ...handled };
      const reply = (await ask('{ hkLimited }', fresh())).body as GraphqlReply;
      expect(reply.errors?.map((e) => e.message)).toEqual(['setHeaders said no']);
      expect(delta(before)).toEqual({});
      expect(await unhandledSince(seen)).toEqual([]);
    });
  });
});

describe.each(PLATFORMS)(
  'unavailableError of a RateLimitGuard subclass on %s (Redis down, failOpen: false)',
  (platform) => {
    let server: RedisServerHandle;
    let http: Server;
    let log: ReturnType<typeof recordingLogger>;
    beforeAll(async () => {
      server = await startRedisServer();
      log = recordingLogger();
      const app = await bootToolkitApp({
        target: { url: server.url },
        platform,
        http: true,
        logger: log.logger,
        commandTimeout: 300,
        maxReconnectDelay: 100,
        keyPrefix: `rtk-hku${randomBytes(4).toString('hex')}:`,
        rateLimit: { failOpen: false, warnIntervalMs: 60_000 },
        controllers: [OutageController],
        providers: [HookGuard],
      });
      http = app.app.getHttpServer() as Server;
      expect((await request(http).get('/outage').set('x-tracker', 'before')).status).toBe(200);
      await server.kill();
    });
    afterAll(async () => {
      await closeToolkitApps();
      await server.stop();
    });
    const get = () => request(http).get('/outage').set('x-tracker', fresh()).timeout(5_000);

    it('not overridden: the standard 503', async () => {
      const res = await get();
      expect(res.status).toBe(503);
      expect(res.body).toEqual({ statusCode: 503, message: 'Rate limiting is unavailable, try again later' });
    });

    it("returning an HttpException of its own (the hook's contract: the error to throw): the client gets it", async () => {
      hooks.unavailableError = resolves(new HttpException({ statusCode: 507, message: 'no limiter' }, 507));
      const res = await get();
      expect(res.status).toBe(507);
      expect(res.body).toEqual({ statusCode: 507, message: 'no limiter' });
    });

    it.each(THROWS)('that %s: the client gets its error', async (_l, b) => {
      hooks.unavailableError = b;
      const before = { ...handled };
      const res = await get();
      expect(res.status).toBe(418);
      expect(res.body).toEqual({ statusCode: 418, message: 'unavailableError said no' });
      expect(delta(before)).toEqual({});
    });

    // `throw await this.unavailableError(...)` threw the value itself: a 500 whose log said `undefined` or `42`
    it.each<[string, unknown]>([
      ['undefined', undefined],
      ['null', null],
      ['42', 42],
      ['an object', { statusCode: 503 }],
      ['a string', 'Service Unavailable'],
    ])('giving %s: a 500, InvalidOptionsError naming HookGuard.unavailableError; never let through', async (_l, v) => {
      hooks.unavailableError = resolves(v);
      const from = log.errors.length;
      const before = { ...handled };
      expect((await get()).status).toBe(500);
      expect(delta(before)).toEqual({});
      expect(log.errors.slice(from).join('\n')).toMatch(
        /InvalidOptionsError: HookGuard\.unavailableError must return the Error to throw/,
      );
    });
  },
);
