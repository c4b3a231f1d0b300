/**
 * The failure conformance suite: every feature × every failure scenario, each cell asserting the feature's documented
 * outcome and what it counted. The shape of bentocache's driver test suite: one table of rows (features), run
 * through the same scenarios, on one private server per scenario shared by every row.
 *
 * Transport failures (killed, paused, not yet connected) follow each feature's failure policy: cache → loader,
 * rate limit → allow (fail open), sessions → RedisUnavailableError (503), locks → RedisUnavailableError (fail closed),
 * pub/sub → RedisUnavailableError for the publisher. Error replies (WRONGTYPE, OOM, an ACL denial) fail that one call
 * with RedisReplyError / RedisPermissionError, never a fail-open; health says `degraded` when Redis refuses writes.
 */
import 'reflect-metadata';
import { Controller, Get, Injectable, UseGuards } from '@nestjs/common';
import { SubscribeMessage, WebSocketGateway } from '@nestjs/websockets';
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import { Redis } from 'ioredis';
import { io, type Socket } from 'socket.io-client';
import {
  Cacheable,
  CacheService,
  LockService,
  PubSubService,
  RateLimitGuard,
  RateLimitService,
  REDIS_CLIENT,
  RedisSessionStore,
  RedisToolkitHealth,
  SessionService,
  Throttle,
} from '../../lib/index.js';
import { generateSessionId, KeyBuilder } from '../../lib/advanced.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { trackForCleanup } from '../support/private-servers.js';
import { within } from '../support/timing.js';
import { closeToolkitApps, createToolkitApp, type ToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';
import { fillUntilOom } from '../support/out-of-memory.js';

const COMMAND_TIMEOUT = 300;
const PREFIX = 'rtk:';
const POLICY = { limit: 1, ttl: 60_000 };

@Controller('rl')
@UseGuards(RateLimitGuard)
class LimitedController {
  @Get()
  @Throttle(POLICY)
  get(): string {
    return 'ok';
  }
}

@WebSocketGateway({ namespace: '/conformance' })
@UseGuards(RateLimitGuard)
class LimitedGateway {
  @SubscribeMessage('ping')
  @Throttle(POLICY)
  ping(): string {
    return 'pong';
  }
}

@Injectable()
class CachedRepository {
  loads = 0;

  @Cacheable({ key: 'repo:item', ttl: 60_000 })
  async item(): Promise<string> {
    this.loads++;
    return 'loaded';
  }
}

/** Everything a row needs, built once per scenario. */
interface World {
  server: RedisServerHandle;
  app: ToolkitApp;
  port: number;
  socket: Socket;
  wsExceptions: unknown[];
  store: RedisSessionStore;
  sessionId: string;
  storeId: string;
  received: unknown[];
}

/** A row: one feature, one call, and the counter its failures go to (null when it keeps none). */
interface Row {
  name: string;
  /** A label for the outcome: the value (`cached`, `denied`, `429`...) or `error:<code>`. */
  call(w: World): Promise<string>;
  count(w: World): number | null;
}

const label = (err: unknown): string => {
  const e = err as { code?: string; status?: number };
  return `error:${e.code ?? String(err)}${e.status ? `:${e.status}` : ''}`;
};
const attempt = async (run: () => Promise<string>): Promise<string> => run().catch(label);
const sumCounts = (c: { unavailable: number; replyErrors: number }) => c.unavailable + c.replyErrors;
const rateLimitCount = (w: World) => {
  const s = w.app.get(RateLimitService).stats();
  return s.failedOpen + s.failedClosed + s.replyErrors;
};

const ROWS: Row[] = [
  {
    name: 'cache service (getOrSet)',
    call: (w) => attempt(() => w.app.get(CacheService).getOrSet('item', async () => 'loaded')),
    count: (w) => w.app.get(CacheService).stats().errors,
  },
  {
    name: '@Cacheable',
    call: (w) => attempt(() => w.app.get(CachedRepository).item()),
    count: (w) => w.app.get(CacheService).stats().errors,
  },
  {
    name: 'rate-limit service (consume)',
    call: (w) =>
      attempt(async () => {
        const r = await w.app.get(RateLimitService).consume('conformance', POLICY);
        return r.degraded ?? (r.allowed ? 'allowed' : 'denied');
      }),
    count: rateLimitCount,
  },
  {
    name: 'rate-limit service (a new client)',
    call: (w) =>
      attempt(async () => {
        const r = await w.app.get(RateLimitService).consume(`new-${randomBytes(4).toString('hex')}`, POLICY);
        return r.degraded ?? (r.allowed ? 'allowed' : 'denied');
      }),
    count: rateLimitCount,
  },
  {
    name: 'rate-limit HTTP guard',
    call: async (w) => String((await fetch(`http://127.0.0.1:${w.port}/rl`)).status),
    count: rateLimitCount,
  },
  {
    name: 'rate-limit WebSocket guard',
    call: async (w) => {
      w.wsExceptions.length = 0;
      try {
        return String(await w.socket.timeout(within(COMMAND_TIMEOUT)).emitWithAck('ping'));
      } catch {
        const e = w.wsExceptions[0] as { statusCode?: number; message?: string } | undefined;
        return `ws:${e?.statusCode ?? e?.message ?? 'no answer'}`;
      }
    },
    count: rateLimitCount,
  },
  {
    name: 'session service (update)',
    call: (w) =>
      attempt(async () => {
        await w.app.get(SessionService).update(w.sessionId, { n: Date.now() });
        return 'updated';
      }),
    count: (w) => sumCounts(w.app.get(SessionService).stats()),
  },
  {
    name: 'RedisSessionStore (set)',
    call: (w) =>
      attempt(async () => {
        const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000) };
        await w.store.set(w.storeId, { cookie, n: 1 } as never);
        return 'stored';
      }),
    count: () => null,
  },
  {
    name: 'locks (tryAcquire)',
    call: (w) =>
      attempt(async () => {
        const lock = await w.app.get(LockService).tryAcquire('conformance', { ttl: 5_000 });
        if (!lock) return 'busy';
        await lock.release();
        return 'acquired';
      }),
    count: (w) => sumCounts(w.app.get(LockService).stats()),
  },
  {
    name: 'pub/sub (notifyUser)',
    call: (w) => attempt(async () => `sent:${await w.app.get(PubSubService).notifyUser('alice', { at: Date.now() })}`),
    count: (w) => sumCounts(w.app.get(PubSubService).stats()),
  },
  {
    name: 'health',
    call: async (w) => {
      const h = await w.app.get(RedisToolkitHealth).check();
      return h.status;
    },
    count: () => null,
  },
];

// every RedisUnavailableError carries its HTTP status (503): a route handler that throws it is answered 503
const UNAVAILABLE = 'error:E_REDIS_UNAVAILABLE:503';
const REPLY = 'error:E_REDIS_REPLY';
const DENIED = 'error:E_REDIS_PERMISSION';

/** Row name → [outcome, how much its counter moved]. */
type Expected = Record<string, [string, number | null]>;

const HEALTHY: Expected = {
  'cache service (getOrSet)': ['loaded', 0],
  '@Cacheable': ['loaded', 0],
  'rate-limit service (consume)': ['denied', 0],
  'rate-limit service (a new client)': ['allowed', 0],
  'rate-limit HTTP guard': ['429', 0],
  'rate-limit WebSocket guard': ['ws:429', 0],
  'session service (update)': ['updated', 0],
  'RedisSessionStore (set)': ['stored', null],
  'locks (tryAcquire)': ['acquired', 0],
  'pub/sub (notifyUser)': ['sent:1', 0],
  health: ['up', null],
};

/** Redis unreachable (killed, paused, never connected): each feature's failure policy, counted once per call. */
const OUTAGE: Expected = {
  'cache service (getOrSet)': ['loaded', 1],
  '@Cacheable': ['loaded', 1],
  'rate-limit service (consume)': ['fail-open', 1],
  'rate-limit service (a new client)': ['fail-open', 1],
  'rate-limit HTTP guard': ['200', 1],
  'rate-limit WebSocket guard': ['pong', 1],
  'session service (update)': [UNAVAILABLE, 1],
  'RedisSessionStore (set)': [UNAVAILABLE, null],
  'locks (tryAcquire)': [UNAVAILABLE, 1],
  'pub/sub (notifyUser)': [UNAVAILABLE, 1],
  health: ['down', null],
};

/** An error reply under each feature's key: that call fails with a typed error (never a fail-open), counted. */
const WRONGTYPE: Expected = {
  // the cache owns its keys: a foreign value is a miss, replaced by the load
  'cache service (getOrSet)': ['loaded', 0],
  '@Cacheable': ['loaded', 0],
  'rate-limit service (consume)': [REPLY, 1],
  'rate-limit service (a new client)': ['allowed', 0],
  'rate-limit HTTP guard': ['500', 1],
  'rate-limit WebSocket guard': ['ws:Internal server error', 1],
  'session service (update)': [REPLY, 1],
  'RedisSessionStore (set)': [REPLY, null],
  'locks (tryAcquire)': [REPLY, 1],
  'pub/sub (notifyUser)': [REPLY, 1],
  health: ['up', null],
};

/**
 * maxmemory reached under noeviction: writes fail with RedisReplyError (OOM), health is degraded. A rate-limit
 * decision that refuses writes nothing, so a client over its limit is still denied (never let through).
 */
const OOM: Expected = {
  'cache service (getOrSet)': [REPLY, 1],
  '@Cacheable': [REPLY, 1],
  'rate-limit service (consume)': ['denied', 0],
  // Redis lets a script that has already written go on under OOM: the sliding window trims (ZREMRANGEBYSCORE)
  // before it adds, so the decision is made and stored as usual (not a fail-open: it is counted in Redis)
  'rate-limit service (a new client)': ['allowed', 0],
  'rate-limit HTTP guard': ['429', 0],
  'rate-limit WebSocket guard': ['ws:429', 0],
  'session service (update)': [REPLY, 1],
  'RedisSessionStore (set)': [REPLY, null],
  'locks (tryAcquire)': [REPLY, 1],
  'pub/sub (notifyUser)': [REPLY, 1],
  health: ['degraded', null],
};

/** A command each feature needs is revoked at run time: RedisPermissionError for that call, never a fail-open. */
const ACL_DENIED: Expected = {
  'cache service (getOrSet)': [DENIED, 1],
  '@Cacheable': [DENIED, 1],
  'rate-limit service (consume)': [DENIED, 1],
  'rate-limit service (a new client)': [DENIED, 1],
  'rate-limit HTTP guard': ['500', 1],
  'rate-limit WebSocket guard': ['ws:Internal server error', 1],
  'session service (update)': [DENIED, 1],
  'RedisSessionStore (set)': [DENIED, null],
  'locks (tryAcquire)': [DENIED, 1],
  'pub/sub (notifyUser)': [DENIED, 1],
  health: ['up', null],
};

const ACL_USER = { name: 'app', password: randomBytes(8).toString('hex') };

async function build(options: { lazy?: boolean; server?: RedisServerHandle; acl?: boolean } = {}): Promise<World> {
  const server = options.server ?? trackForCleanup(await startRedisServer(options.acl ? { aclUser: ACL_USER } : {}));
  const app = await createToolkitApp({
    target: { url: server.url },
    http: true,
    keyPrefix: PREFIX,
    commandTimeout: COMMAND_TIMEOUT,
    maxReconnectDelay: 100,
    lazyConnect: options.lazy ?? false,
    rateLimit: { warnIntervalMs: 60_000 },
    pubsub: { durable: true },
    controllers: [LimitedController],
    providers: [LimitedGateway, CachedRepository],
  });
  const { port } = (app.app.getHttpServer() as Server).address() as { port: number };
  const socket = io(`http://127.0.0.1:${port}/conformance`, { transports: ['websocket'], reconnection: false });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  const wsExceptions: unknown[] = [];
  socket.on('exception', (e: unknown) => wsExceptions.push(e));
  const store = new RedisSessionStore({ client: app.get(REDIS_CLIENT), prefix: PREFIX });
  const world: World = {
    server,
    app,
    port,
    socket,
    wsExceptions,
    store,
    sessionId: '',
    storeId: randomBytes(24).toString('base64url'),
    received: [],
  };
  return world;
}

/** Healthy first: caches filled, every rate limit used up, a session, a subscriber; then every row healthy. */
async function baseline(w: World): Promise<void> {
  await w.app.get(CacheService).set('item', 'cached');
  w.sessionId = (await w.app.get(SessionService).create('alice', { n: 0 })).id;
  await w.app.get(PubSubService).subscribe('user:alice', (m) => void w.received.push(m));
  await w.app.get(RateLimitService).consume('conformance', POLICY);
  expect((await fetch(`http://127.0.0.1:${w.port}/rl`)).status).toBe(200);
  expect(await w.socket.timeout(within(COMMAND_TIMEOUT)).emitWithAck('ping')).toBe('pong');
}

async function expectRows(w: World, expected: Expected, bounded = false): Promise<void> {
  const outcomes: Record<string, [string, number | null]> = {};
  for (const row of ROWS) {
    const before = row.count(w);
    const started = Date.now();
    const outcome = await row.call(w);
    if (bounded) expect(Date.now() - started).toBeLessThan(within(2 * COMMAND_TIMEOUT));
    const after = row.count(w);
    outcomes[row.name] = [outcome, before === null || after === null ? null : after - before];
  }
  expect(outcomes).toEqual(expected);
}

afterEach(async () => {
  await closeToolkitApps();
});

describe('failure conformance: every feature × every scenario', () => {
  it('healthy baseline', async () => {
    const w = await build();
    await baseline(w);
    await w.app.get(CacheService).del('item');
    await expectRows(w, HEALTHY);
    w.socket.disconnect();
  });

  it('Redis killed: each feature follows its failure policy, counted, within commandTimeout', async () => {
    const w = await build();
    await baseline(w);
    await w.server.kill();
    await expectRows(w, OUTAGE, true);
    w.socket.disconnect();
  });

  it('Redis paused (SIGSTOP): the same outcomes, none waits past commandTimeout', async () => {
    const w = await build();
    await baseline(w);
    w.server.pause();
    try {
      await expectRows(w, OUTAGE, true);
    } finally {
      w.server.resume();
    }
    w.socket.disconnect();
  });

  it('Redis restarted (no persistence): every feature works again, the subscriber is back', async () => {
    const w = await build();
    await baseline(w);
    await w.server.kill();
    await w.server.restart();
    expect(await waitFor(async () => (await w.app.get(RedisToolkitHealth).check()).status === 'up', 10_000)).toBe(true);
    // the data went with the restart: recreate the session and use up the limits again
    w.sessionId = (await w.app.get(SessionService).create('alice', {})).id;
    await w.app.get(RateLimitService).consume('conformance', POLICY);
    await fetch(`http://127.0.0.1:${w.port}/rl`);
    await w.socket.timeout(within(COMMAND_TIMEOUT)).emitWithAck('ping');
    const pubsub = w.app.get(PubSubService);
    expect(
      await waitFor(async () => {
        await pubsub.notifyUser('alice', 'ping');
        return w.received.includes('ping');
      }, 10_000),
    ).toBe(true);
    await expectRows(w, HEALTHY);
    w.socket.disconnect();
  });

  it('connection not ready yet (lazyConnect, Redis down at start): the outage outcomes; then it connects', async () => {
    const server = trackForCleanup(await startRedisServer());
    await server.stop();
    const w = await build({ lazy: true, server });
    w.sessionId = generateSessionId(); // a well-formed id: the call reaches the failure policy
    await expectRows(w, OUTAGE, true);
    await server.restart();
    expect(await waitFor(async () => (await w.app.get(RedisToolkitHealth).check()).status === 'up', 10_000)).toBe(true);
    w.socket.disconnect();
  });

  it('WRONGTYPE (a foreign value under each feature key): that call fails with RedisReplyError, never a fail-open', async () => {
    const w = await build();
    await baseline(w);
    const admin = trackForCleanup(new Redis(w.server.port, '127.0.0.1'));
    const keys = new KeyBuilder(PREFIX);
    const rl = w.app.get(RateLimitService);
    const foreign = [
      keys.key('cache', 'item'),
      keys.key('cache', 'repo:item'),
      // the counters of the service call, of the HTTP route and of the WebSocket handler
      ...(await scanAll(admin, `${PREFIX}rl:*`)),
      `${PREFIX}sess:{${w.sessionId}}`,
      `${PREFIX}sess:{${w.storeId}}`,
      `${keys.tagged('lock', 'conformance')}:fence`,
    ];
    expect(foreign.length).toBeGreaterThanOrEqual(8);
    for (const key of foreign) {
      await admin.del(key);
      await admin.hset(key, 'foreign', '1');
    }
    expect(rl.redisKey('conformance', '1/60000', 'sliding-window')).toMatch(/^rtk:rl:/);
    await admin.del(`${PREFIX}ps:stream:{alice}`);
    await admin.set(`${PREFIX}ps:stream:{alice}`, 'foreign');
    await expectRows(w, WRONGTYPE);
    w.socket.disconnect();
  });

  it('OOM (maxmemory reached under noeviction): writes fail with RedisReplyError, health is degraded', async () => {
    const w = await build();
    await baseline(w);
    await fillUntilOom(w.server.port);
    await w.app
      .get(CacheService)
      .del('item')
      .catch(() => undefined);
    await expectRows(w, OOM);
    const health = await w.app.get(RedisToolkitHealth).check();
    expect(health.reason).toMatch(/maxmemory reached under noeviction/);
    w.socket.disconnect();
  });

  it('ACL: a command each feature needs revoked at run time → RedisPermissionError, never a fail-open', async () => {
    const w = await build({ acl: true });
    await baseline(w);
    const admin = trackForCleanup(new Redis(w.server.port, '127.0.0.1', { username: 'default' }));
    await w.app.get(CacheService).del('item');
    // TIME (rate limit), GET/MGET (cache reads, session and store scripts), SET (locks), XADD (durable pub/sub)
    await admin.call('acl', 'setuser', ACL_USER.name, '-time', '-get', '-mget', '-set', '-xadd');
    await expectRows(w, ACL_DENIED);
    w.socket.disconnect();
  });
});

async function scanAll(client: Redis, pattern: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    found.push(...keys);
  } while (cursor !== '0');
  return found;
}
