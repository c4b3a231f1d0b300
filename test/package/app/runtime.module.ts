// The runtime fixture (run.mjs --runtime, for Bun and Deno): what main.ts's routes do not reach and a runtime other
// than Node may get silently wrong. The URL cache's X-Cache, the L1 under CLIENT TRACKING (served without a Redis
// read, dropped when another client writes), the rate limit's headers and refunds (decided on the response's
// 'finish' and 'close', including a client that aborts), a lock auto-extended past its ttl and seen by
// LockService.current() across awaits (AsyncLocalStorage), and the toolkit's diagnostics_channel events.
import { AsyncLocalStorage } from 'node:async_hooks';
import { subscribe, tracingChannel, unsubscribe } from 'node:diagnostics_channel';
import {
  Controller,
  Get,
  HttpCode,
  Inject,
  Module,
  Post,
  Query,
  UnauthorizedException,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import { Redis } from 'ioredis';
import {
  CacheService,
  LockService,
  RateLimitGuard,
  RateLimitService,
  REDIS_CLIENT,
  RedisToolkitModule,
  SessionService,
  Throttle,
} from 'nestjs-redis-toolkit';
import { CacheTTL, HttpCacheInterceptor } from 'nestjs-redis-toolkit/advanced';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** keyspace_hits + keyspace_misses of INFO stats: every read of a key counts one, INFO itself none. */
async function keyReads(client: Redis): Promise<number> {
  const info = await client.info('stats');
  const read = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(info)?.[1] ?? Number.NaN);
  return read('keyspace_hits') + read('keyspace_misses');
}

@Controller()
class RuntimeController {
  private renders = 0;
  private slowEntered = false;

  constructor(
    private readonly cache: CacheService,
    private readonly locks: LockService,
    private readonly rateLimit: RateLimitService,
    private readonly sessions: SessionService,
    @Inject(REDIS_CLIENT) private readonly redis: Redis,
  ) {}

  @Get('page')
  @UseInterceptors(HttpCacheInterceptor)
  @CacheTTL(60_000)
  page() {
    return { renders: ++this.renders };
  }

  /** The L1 in tracking mode, checked from inside the app (it needs a second connection, as another client). */
  @Get('l1')
  async l1() {
    const other = new Redis(process.env.REDIS_URL ?? '', { lazyConnect: true });
    try {
      await other.connect();
      await this.cache.set('l1-key', { v: 1 }, { ttl: 60_000 });
      const first = await this.cache.get('l1-key');
      const before = await keyReads(other);
      const reads = [];
      for (let i = 0; i < 5; i++) reads.push(await this.cache.get('l1-key'));
      const redisReadsForFiveGets = (await keyReads(other)) - before;
      const clients = await other.client('LIST');
      await other.del('fixture-rt:cache:l1-key'); // reported by Redis to the L1's tracking connection
      let after: unknown = { v: 1 };
      for (let i = 0; i < 500 && after !== undefined; i++) {
        after = await this.cache.get('l1-key');
        if (after !== undefined) await sleep(10);
      }
      return {
        first,
        fromL1: reads.every((r) => JSON.stringify(r) === '{"v":1}') && redisReadsForFiveGets === 0,
        redisReadsForFiveGets,
        trackingConnection: String(clients).includes('name=rtk-l1-tracking'),
        droppedAfterOtherClientsWrite: after === undefined,
      };
    } finally {
      other.disconnect();
    }
  }

  @Get('limited')
  @UseGuards(RateLimitGuard)
  @Throttle({ limit: 2, ttl: 60_000 })
  limited() {
    return { ok: true };
  }

  /** Only failures count: a success is refunded when its response finishes. */
  @Get('attempt')
  @UseGuards(RateLimitGuard)
  @Throttle({ limit: 2, ttl: 60_000, skipSuccessfulRequests: true })
  attempt(@Query('ok') ok: string) {
    if (ok !== '1') throw new UnauthorizedException();
    return { ok: true };
  }

  /** Only successes count: a failure is refunded when its response finishes. */
  @Get('fragile')
  @UseGuards(RateLimitGuard)
  @Throttle({ limit: 1, ttl: 60_000, skipFailedRequests: true })
  fragile(@Query('ok') ok: string) {
    if (ok !== '1') throw new UnauthorizedException();
    return { ok: true };
  }

  /** As /fragile, with a wait the client aborts during: its response closes before it finishes, a failure. */
  @Get('abortable')
  @UseGuards(RateLimitGuard)
  @Throttle({ limit: 1, ttl: 60_000, skipFailedRequests: true })
  async abortable(@Query('wait') wait: string) {
    if (wait === '1') {
      this.slowEntered = true;
      await sleep(1_500);
      this.slowEntered = false;
    }
    return { ok: true };
  }

  @Get('abortable-entered')
  abortableEntered() {
    return { entered: this.slowEntered };
  }

  /** A lock held past its ttl (auto-extended twice), LockService.current() is it after awaits, released after. */
  @Post('long-lock')
  @HttpCode(200)
  async longLock() {
    const seen: boolean[] = [];
    const key = 'fixture-rt:lock:long';
    // a ttl that leaves an extension ~670 ms to land (a busy CI machine), held 2.4 times over
    const token = await this.locks.using('long', { ttl: 1_000 }, async (_signal, lock) => {
      for (let i = 0; i < 6; i++) {
        await sleep(400);
        seen.push(LockService.current()?.lock === lock);
      }
      return lock.fencingToken;
    });
    const keysLeft = await this.redis.keys(`${key}*`);
    const again = await this.locks.tryAcquire('long', { ttl: 1_000 });
    await again?.release();
    return { token, currentEveryTime: seen.length === 6 && seen.every(Boolean), reacquired: again !== null, keysLeft };
  }

  /**
   * Each feature's failure policy while Redis answers nothing (paused by the test): every call bounded by
   * commandTimeout (ioredis's timers and the toolkit's), then the cache serves the loader's value, the rate limit
   * fails open (its default), a session and a lock fail with RedisUnavailableError.
   */
  @Get('outage')
  async outage() {
    const failure = (err: unknown) => (err instanceof Error ? err.name : String(err));
    const cached = await this.cache.getOrSetWithStatus('outage-key', () => 'from-loader', { ttl: 60_000 });
    const decision = await this.rateLimit.consume('outage', { limit: 5, ttl: 60_000 });
    return {
      cache: { value: cached.value, degraded: cached.degraded },
      rateLimit: { allowed: decision.allowed, degraded: decision.degraded },
      session: await this.sessions.create('bob', {}).then(() => 'created', failure),
      lock: await this.locks.tryAcquire('outage', { ttl: 1_000 }).then(() => 'acquired', failure),
    };
  }

  /** After a restart of Redis: whether the cache reaches it again (ioredis reconnected) and stores. */
  @Get('recovered')
  async recovered() {
    const cached = await this.cache.getOrSetWithStatus('recovered-key', () => 'stored', { ttl: 60_000 });
    return {
      degraded: cached.degraded ?? null,
      stored: (await this.redis.exists('fixture-rt:cache:recovered-key').catch(() => 0)) === 1,
    };
  }

  /**
   * The toolkit's diagnostics_channel events (what the dashboard and custom metrics subscribe to), and its
   * TracingChannel with a store bound to its start (how a tracer makes its span the loader's context).
   */
  @Get('diagnostics')
  async diagnostics() {
    const events: string[] = [];
    const onGet = (message: unknown) => events.push(`get:${(message as { outcome: string }).outcome}`);
    const traced = tracingChannel('rtk:cache:get');
    const store = new AsyncLocalStorage<string>();
    const traces: string[] = [];
    const handlers = {
      start: () => traces.push('start'),
      end: () => undefined,
      asyncStart: () => undefined,
      asyncEnd: () => traces.push('asyncEnd'),
      error: () => traces.push('error'),
    };
    subscribe('rtk:cache:get', onGet);
    traced.subscribe(handlers);
    traced.start.bindStore(store, () => 'span-of-this-get');
    let loaderSaw: string | undefined;
    try {
      await this.cache.getOrSet('diag-key', async () => {
        loaderSaw = store.getStore();
        return 1;
      });
      await this.cache.getOrSet('diag-key', async () => 2);
    } finally {
      traced.start.unbindStore(store);
      traced.unsubscribe(handlers);
      unsubscribe('rtk:cache:get', onGet);
    }
    return { events, traces, loaderSaw };
  }
}

@Module({
  imports: [
    RedisToolkitModule.forRootAsync({
      useFactory: () => ({
        connection: { url: process.env.REDIS_URL ?? 'redis://127.0.0.1:1' },
        keyPrefix: 'fixture-rt:',
        cache: { l1: { max: 100, ttl: 60_000, invalidation: 'tracking' } },
        session: { cookie: { secret: 'fixture-secret', secure: false } },
      }),
    }),
  ],
  controllers: [RuntimeController],
})
export class RuntimeModule {}
