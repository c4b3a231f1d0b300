/**
 * An app's tests under fake timers (docs/testing.md, Fake timers): each setting teams use, faked before the app is
 * built and after it started, with the common call of every feature on a private server, HTTP on Express and Fastify.
 * Every await is bounded by Node's own setTimeout (node:timers, which no fake replaces), so a hang is a failed
 * assertion ('HANG'), never a stuck test. Vitest's vi.useFakeTimers() is the same library installing the same
 * functions as Jest's with doNotFake ['nextTick', 'queueMicrotask'] (its default), which stands for it here.
 */
import 'reflect-metadata';
import { request } from 'node:http';
import { clearTimeout as realClearTimeout, setTimeout as realSetTimeout } from 'node:timers';
import { jest } from '@jest/globals';
import { Controller, Get, Injectable, type INestApplication, UseGuards } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import {
  Cacheable,
  CacheService,
  LockService,
  PubSubService,
  RateLimitGuard,
  RateLimitService,
  SessionService,
  Throttle,
  WithLock,
} from '../../lib/index.js';
import { createRedisTestingModule, type RedisServerHandle, startRedisServer } from '../../lib/testing/index.js';

const BOUND_MS = 5_000;
/**
 * The bound for a Nest app on Fastify without the toolkit, whose start is expected to hang (was BOUND_MS): unfaked it
 * starts in ~10 ms once @nestjs/platform-fastify is loaded (loaded in beforeAll, so not inside the bound; ~0.5 s cold,
 * measured at a load of 11 on the 2-core box), so not starting within 2 s is still far past that; a start that did
 * finish would be 'ok "started"' and fail the case.
 */
const FASTIFY_HANG_MS = 2_000;

/** 'ok <json>', 'error <code>' or 'HANG' (not settled within `boundMs` of real time). */
async function outcome(work: () => Promise<unknown>, boundMs = BOUND_MS): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work().then(
        (value) => `ok ${JSON.stringify(value)}`,
        (err: unknown) => `error ${(err as { code?: string }).code ?? (err as Error).message}`,
      ),
      new Promise<string>((resolve) => {
        timer = realSetTimeout(() => resolve('HANG'), boundMs);
      }),
    ]);
  } finally {
    realClearTimeout(timer);
  }
}

@Injectable()
class Reports {
  loads = 0;
  runs = 0;

  @Cacheable({ key: 'price', ttl: 60_000 })
  async price(): Promise<number> {
    return ++this.loads;
  }

  @WithLock({ resource: 'report', ttl: 5_000 })
  async report(): Promise<number> {
    return ++this.runs;
  }
}

@Controller()
class Api {
  @Get('limited')
  @UseGuards(RateLimitGuard)
  @Throttle({ limit: 1, ttl: 60_000 })
  limited(): string {
    return 'ok';
  }
}

/** A route with no guard: Fastify's own start, without the toolkit. */
@Controller()
class Plain {
  @Get('plain')
  plain(): string {
    return 'ok';
  }
}

/** A GET on node:http (its sockets and timers are Node's own): the status. */
function statusOf(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The common call of each feature, with what it answers when it works. */
const CALLS: Record<string, { run: (app: INestApplication, port: number) => Promise<unknown>; works: unknown }> = {
  'cache getOrSet/get': {
    run: async (app) => {
      const cache = app.get(CacheService);
      let loads = 0;
      const first = await cache.getOrSet('k', async () => ++loads, { ttl: 60_000 });
      const second = await cache.getOrSet('k', async () => ++loads, { ttl: 60_000 });
      return [first, second, await cache.get('k'), loads];
    },
    works: [1, 1, 1, 1],
  },
  '@Cacheable': {
    run: async (app) => {
      const reports = app.get(Reports);
      return [await reports.price(), await reports.price(), reports.loads];
    },
    works: [1, 1, 1],
  },
  'rate-limit consume': {
    run: async (app) => {
      const limits = app.get(RateLimitService);
      const allowed: boolean[] = [];
      for (let i = 0; i < 3; i++) allowed.push((await limits.consume('u', { limit: 2, ttl: 60_000 })).allowed);
      return allowed;
    },
    works: [true, true, false],
  },
  'RateLimitGuard over HTTP': {
    run: async (_app, port) => [await statusOf(port, '/limited'), await statusOf(port, '/limited')],
    works: [200, 429],
  },
  'session create/get': {
    run: async (app) => {
      const sessions = app.get(SessionService);
      const created = await sessions.create('u1', { theme: 'dark' });
      return (await sessions.get(created.id))?.data;
    },
    works: { theme: 'dark' },
  },
  'lock acquire/release, @WithLock': {
    run: async (app) => {
      const locks = app.get(LockService);
      for (let i = 0; i < 2; i++) await (await locks.acquire('r', { ttl: 5_000 })).release();
      const reports = app.get(Reports);
      return [await reports.report(), await reports.report()];
    },
    works: [1, 2],
  },
  'publish to a subscriber': {
    run: async (app) => {
      const pubsub = app.get(PubSubService);
      let heard!: (payload: unknown) => void;
      const received = new Promise((resolve) => {
        heard = resolve;
      });
      await pubsub.subscribe('news', (payload) => heard(payload));
      return [await pubsub.publish('news', { n: 1 }), await received];
    },
    works: [1, { n: 1 }],
  },
};

const works = (names = Object.keys(CALLS)): Record<string, string> =>
  Object.fromEntries(names.map((name) => [name, `ok ${JSON.stringify(CALLS[name].works)}`]));

/**
 * What each setting gives, faked before the app is built and after it started. A faked process.nextTick (Jest's
 * default) stops ioredis connecting: the start, or the subscriber's first connection, is a FakeTimersError.
 */
const SETTINGS: {
  name: string;
  fake: () => void;
  before: 'works' | 'refused at start';
  after: 'works' | 'subscribe refused';
  /** Fakes queueMicrotask on a clock advanced by hand: Fastify itself (avvio) never finishes starting then. */
  stopsFastify?: true;
}[] = [
  {
    name: 'jest.useFakeTimers()',
    fake: () => jest.useFakeTimers(),
    before: 'refused at start',
    after: 'subscribe refused',
    stopsFastify: true,
  },
  {
    name: "doNotFake: ['nextTick', 'setImmediate']",
    fake: () => jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate'] }),
    before: 'works',
    after: 'works',
    stopsFastify: true,
  },
  {
    name: "doNotFake: ['nextTick']",
    fake: () => jest.useFakeTimers({ doNotFake: ['nextTick'] }),
    before: 'works',
    after: 'works',
    stopsFastify: true,
  },
  {
    name: "doNotFake: ['setImmediate']",
    fake: () => jest.useFakeTimers({ doNotFake: ['setImmediate'] }),
    before: 'refused at start',
    after: 'subscribe refused',
    stopsFastify: true,
  },
  {
    name: 'advanceTimers: true',
    fake: () => jest.useFakeTimers({ advanceTimers: true }),
    before: 'works',
    after: 'works',
  },
  {
    name: 'legacyFakeTimers: true',
    fake: () => jest.useFakeTimers({ legacyFakeTimers: true }),
    before: 'works',
    after: 'works',
  },
  {
    name: "Vitest's vi.useFakeTimers() (doNotFake: ['nextTick', 'queueMicrotask'])",
    fake: () => jest.useFakeTimers({ doNotFake: ['nextTick', 'queueMicrotask'] }),
    before: 'works',
    after: 'works',
  },
];

let redis: RedisServerHandle;
let apps = 0;
beforeAll(async () => {
  redis = await startRedisServer();
  await import('@nestjs/platform-fastify'); // loaded before any bound: FASTIFY_HANG_MS times a start, not a load
});
afterEach(() => jest.useRealTimers());
afterAll(() => redis.stop());

/** Builds and starts an app (HTTP on `platform`), faking with `fake` before or after; each call's outcome. */
async function tryAll(
  fake: () => void,
  when: 'before' | 'after',
  platform: 'express' | 'fastify',
): Promise<{ start: string; calls: Record<string, string> }> {
  let app: INestApplication | undefined;
  let port = 0;
  const calls: Record<string, string> = {};
  try {
    if (when === 'before') fake();
    const start = await outcome(async () => {
      const moduleRef = await createRedisTestingModule({
        redis,
        toolkit: { keyPrefix: `ft${++apps}:` },
        providers: [Reports],
        controllers: [Api],
      }).compile();
      const adapter =
        platform === 'fastify' ? new (await import('@nestjs/platform-fastify')).FastifyAdapter() : undefined;
      app = adapter
        ? moduleRef.createNestApplication(adapter, { logger: false })
        : moduleRef.createNestApplication({ logger: false });
      await app.listen(0, '127.0.0.1');
      port = (app.getHttpServer().address() as { port: number }).port;
      return 'started';
    });
    if (start !== 'ok "started"') return { start, calls };
    if (when === 'after') fake();
    for (const [name, call] of Object.entries(CALLS))
      calls[name] = await outcome(() => call.run(app as INestApplication, port));
    return { start, calls };
  } finally {
    jest.useRealTimers();
    // the close is part of what must never hang (a flush left pending by a fake clock held it before 2026-12-06)
    if (app) calls.close = await outcome(() => (app as INestApplication).close());
  }
}

/** Whether a Nest app on Fastify without the toolkit starts ('ok "started"') with `fake` faked before it is built. */
async function plainFastifyStarts(fake: () => void): Promise<string> {
  let app: INestApplication | undefined;
  try {
    fake();
    return await outcome(async () => {
      const moduleRef = await Test.createTestingModule({ controllers: [Plain] }).compile();
      app = moduleRef.createNestApplication(new (await import('@nestjs/platform-fastify')).FastifyAdapter(), {
        logger: false,
      });
      await app.listen(0, '127.0.0.1');
      return 'started';
    }, FASTIFY_HANG_MS);
  } finally {
    jest.useRealTimers();
    // cleanup, not asserted (was BOUND_MS): an app whose start hung does not close either; one that does close after
    // this goes on doing so in the background
    if (app) await outcome(() => (app as INestApplication).close(), 500);
  }
}

describe.each(SETTINGS)('fake timers: $name', ({ fake, before, after, stopsFastify }) => {
  it.each(['express', 'fastify'] as const)(
    'faked before the app is built (%s)',
    async (platform) => {
      if (platform === 'fastify' && stopsFastify) {
        // Fastify's own start waits on a faked queueMicrotask, with or without the toolkit: nothing of ours to try
        expect(await plainFastifyStarts(fake)).toBe('HANG');
        return;
      }
      const result = await tryAll(fake, 'before', platform);
      if (before === 'works') {
        expect(result.start).toBe('ok "started"');
        expect(result.calls).toEqual({ ...works(), close: 'ok undefined' });
      } else {
        // a clear error naming the remedy at start, not a start that never ends
        expect(result.start).toBe('error E_FAKE_TIMERS');
      }
    },
    60_000,
  );

  it.each(['express', 'fastify'] as const)(
    'faked once the app has started (%s)',
    async (platform) => {
      const result = await tryAll(fake, 'after', platform);
      expect(result.start).toBe('ok "started"');
      if (after === 'works') expect(result.calls).toEqual({ ...works(), close: 'ok undefined' });
      else
        expect(result.calls).toEqual({
          ...works(Object.keys(CALLS).filter((name) => name !== 'publish to a subscriber')),
          'publish to a subscriber': 'error E_FAKE_TIMERS',
          close: 'ok undefined',
        });
    },
    60_000,
  );
});

it('FakeTimersError names the settings that work', async () => {
  jest.useFakeTimers();
  let error: unknown;
  const started = await outcome(async () => {
    const moduleRef = await createRedisTestingModule({ redis, toolkit: { keyPrefix: `ft${++apps}:` } }).compile();
    try {
      await moduleRef.init();
    } catch (err) {
      error = err;
      throw err;
    } finally {
      jest.useRealTimers();
      await moduleRef.close();
    }
  });
  expect(started).toBe('error E_FAKE_TIMERS');
  expect((error as Error).name).toBe('FakeTimersError');
  expect((error as Error).message).toContain("jest.useFakeTimers({ doNotFake: ['nextTick'] })");
  expect((error as Error).message).toContain('jest.useFakeTimers({ advanceTimers: true })');
});
