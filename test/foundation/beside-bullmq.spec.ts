/**
 * The toolkit beside BullMQ (@nestjs/bullmq) on one Redis, as a very common Nest stack has it: jobs flowing while the
 * cache (with an L1 on CLIENT TRACKING), rate limits, sessions, locks and pub/sub are used. BullMQ writes `bull:*` keys,
 * runs its own scripts, duplicates its clients for blocking reads (BZPOPMIN, XREAD BLOCK), wants
 * `maxRetriesPerRequest: null` on them and warns on any maxmemory-policy but `noeviction`. Measured here on a private
 * server (CONFIG SET, exact key counts): what works is pinned with values and counts (docs/connections.md, "Beside
 * BullMQ").
 */
import 'reflect-metadata';
import { Injectable } from '@nestjs/common';
import { BullModule, getQueueToken, Processor, WorkerHost } from '@nestjs/bullmq';
import { type Job, Queue, QueueEvents, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import {
  CacheService,
  InvalidOptionsError,
  LockService,
  PubSubService,
  RateLimitService,
  RedisToolkitHealth,
  SessionService,
} from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { bullConsole, clientList, closing } from '../support/bullmq.js';
import { recordCommands } from '../support/command-recorder.js';
import { errorOf } from '../support/errors.js';
import { setEvictionPolicy } from '../support/eviction-policy.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { scanAll } from '../support/scan.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const EVERY_FEATURE = {
  cache: { l1: { max: 1_000, ttl: 60_000 } },
  rateLimit: {},
  session: {},
  lock: {},
  pubsub: {},
} as const;

/** Every key of the server matching `pattern`, sorted. */
async function keysOf(redis: Redis, pattern: string): Promise<string[]> {
  return (await scanAll(redis, pattern)).sort();
}

const processed: string[] = [];

@Injectable()
@Processor('jobs')
class JobsProcessor extends WorkerHost {
  constructor(
    private readonly cache: CacheService,
    private readonly locks: LockService,
  ) {
    super();
  }

  async process(job: Job<{ n: number }>): Promise<number> {
    // A job that uses the toolkit: a lock around a cache write.
    await this.locks.using(`job:${job.data.n}`, { ttl: 5_000 }, () => this.cache.set(`job:${job.data.n}`, job.data));
    processed.push(String(job.data.n));
    return job.data.n * 2;
  }
}

describe('separate connections: BullModule and RedisToolkitModule in one Nest app', () => {
  const redis = usePrivateRedis();

  beforeEach(async () => {
    processed.length = 0;
    const admin = trackForCleanup(new Redis(redis.server.port, '127.0.0.1'));
    await admin.flushall();
  });

  async function boot() {
    const log = recordingLogger();
    const app = await createToolkitApp({
      target: { url: redis.server.url },
      ...EVERY_FEATURE,
      logger: log.logger,
      imports: [
        BullModule.forRoot({ connection: { host: '127.0.0.1', port: redis.server.port } }),
        BullModule.registerQueue({ name: 'jobs' }),
      ],
      providers: [JobsProcessor],
    });
    const admin = trackForCleanup(new Redis(redis.server.port, '127.0.0.1'));
    return { app, log, admin, queue: app.get<Queue>(getQueueToken('jobs')) };
  }

  it('jobs flow while every feature is used; each side reads back exactly what it wrote', async () => {
    const bull = bullConsole();
    try {
      const { app, log, admin, queue } = await boot();
      const cache = app.get(CacheService);
      const limits = app.get(RateLimitService);
      const sessions = app.get(SessionService);
      const pubsub = app.get(PubSubService);
      const heard: unknown[] = [];
      await pubsub.subscribe('news', (m) => void heard.push(m));

      await cache.set('hot', { v: 1 });
      expect(await cache.get('hot')).toEqual({ v: 1 }); // now in L1
      const remaining: number[] = [];
      const sessionIds: string[] = [];
      for (let n = 0; n < 20; n++) {
        await queue.add('work', { n });
        remaining.push((await limits.consume('ip:1', { limit: 100, ttl: 60_000 })).remaining);
        sessionIds.push((await sessions.create(`u${n % 4}`, { n })).id);
        await pubsub.publish('news', n);
      }
      expect(await waitFor(() => processed.length === 20, 10_000)).toBe(true);
      expect(await waitFor(() => heard.length === 20, 2_000)).toBe(true);
      expect(heard).toEqual([...Array(20).keys()]);
      expect(remaining).toEqual(Array.from({ length: 20 }, (_, i) => 99 - i));
      expect((await queue.getJobCounts('completed', 'failed')).completed).toBe(20);
      expect((await queue.getJobCounts('completed', 'failed')).failed).toBe(0);
      for (const [n, id] of sessionIds.entries()) expect((await sessions.get(id))?.data).toEqual({ n });
      expect(await cache.get('job:7')).toEqual({ n: 7 });

      // CLIENT TRACKING is BCAST on the cache's prefix only: 20 jobs' worth of bull:* writes left the L1 entry there.
      const client = app.get(RedisConnection).client as Redis;
      const tracking = (await client.call('CLIENT', 'TRACKINGINFO')) as unknown[];
      expect(tracking).toEqual([
        'flags',
        ['on', 'bcast', 'noloop'],
        'redirect',
        expect.any(Number),
        'prefixes',
        ['rtk:cache:'],
      ]);
      const { commands } = await recordCommands(client, async () => cache.get('hot'));
      expect(commands).toEqual([]); // served from L1: not invalidated

      expect((await app.get(RedisToolkitHealth).check()).status).toBe('up');
      // BullMQ's blocking read is on a connection of its own, not the toolkit's
      const blocked = (await clientList(admin)).filter((c) => c.cmd === 'bzpopmin');
      expect(blocked).toHaveLength(1);
      expect(blocked[0]?.id).not.toBe(String(await client.client('ID')));
      expect(log.warnings).toEqual([]);
      expect(log.errors).toEqual([]);
      expect(bull.warnings).toEqual([]);
      expect(bull.errors).toEqual([]);
    } finally {
      bull.restore();
    }
  });

  it("cache.clear() and invalidatePattern never touch bull:*; BullMQ's obliterate never touches rtk:*", async () => {
    const { app, admin, queue } = await boot();
    const cache = app.get(CacheService);
    for (let n = 0; n < 10; n++) await queue.add('work', { n });
    expect(await waitFor(() => processed.length === 10, 10_000)).toBe(true);
    await cache.set('products:1', 1);
    await cache.set('other', 2);
    await app.get(SessionService).create('ann');
    await app.get(RateLimitService).consume('ip:1', { limit: 5, ttl: 60_000 });
    const bullKeys = await keysOf(admin, 'bull:*');
    expect(bullKeys.length).toBeGreaterThan(10); // jobs, their logs, meta, events, id...

    expect(await cache.invalidatePattern('*')).toBe(12); // products:1, other and the 10 job:<n> of the processor
    expect(await keysOf(admin, 'bull:*')).toEqual(bullKeys);
    await cache.set('again', 3);
    expect(await cache.clear()).toBe(1);
    expect(await keysOf(admin, 'bull:*')).toEqual(bullKeys);

    await cache.set('kept', 4);
    const ours = await keysOf(admin, 'rtk:*');
    expect(ours.filter((k) => k.startsWith('rtk:cache:'))).toHaveLength(1);
    await queue.pause();
    await queue.obliterate({ force: true });
    expect(await keysOf(admin, 'bull:jobs:*')).toEqual([]);
    expect(await keysOf(admin, 'rtk:*')).toEqual(ours);
    expect(await cache.get('kept')).toBe(4);
  });
});

describe('one ioredis client shared by BullMQ and the toolkit', () => {
  const redis = usePrivateRedis();

  /** The client a BullMQ user builds once: BullMQ's required setting, and the toolkit's commandTimeout when given. */
  const sharedClient = (commandTimeout?: number) =>
    trackForCleanup(
      new Redis(redis.server.port, '127.0.0.1', {
        maxRetriesPerRequest: null,
        ...(commandTimeout === undefined ? {} : { commandTimeout }),
      }),
    );

  it('without a commandTimeout: refused at start, the message naming the setting that suits BullMQ too', async () => {
    const client = sharedClient();
    const err = await errorOf(() => createToolkitApp({ target: { client }, ...EVERY_FEATURE }));
    expect(err).toBeInstanceOf(InvalidOptionsError);
    const { message } = err as InvalidOptionsError;
    expect(message).toContain('connection.client has no commandTimeout');
    expect(message).toContain('new Redis(url, { commandTimeout: 1000 })');
    // A BullMQ client (maxRetriesPerRequest: null): its Worker and QueueEvents duplicate it for blocking reads of up
    // to 10 s, which a commandTimeout of 1000 would cut; the message says how to keep both.
    expect(message).toContain('BullMQ');
    expect(message).toContain('client.duplicate({ commandTimeout: 1000 })');
    expect(client.status).not.toBe('end'); // left open: it is the user's
  });

  it('with commandTimeout 1000: a Queue and every feature on it; a Worker on it times out while idle', async () => {
    const client = sharedClient(1_000);
    const log = recordingLogger();
    const app = await createToolkitApp({ target: { client }, ...EVERY_FEATURE, logger: log.logger });
    const queue = closing(new Queue('shared', { connection: client }));
    const done: number[] = [];
    const workerErrors: string[] = [];
    const worker = new Worker<{ n: number }>('shared', async (job) => void done.push(job.data.n), {
      connection: client,
    });
    worker.on('error', (err) => void workerErrors.push(err.message));
    const events = closing(new QueueEvents('shared', { connection: client }));
    const eventErrors: string[] = [];
    events.on('error', (err) => void eventErrors.push(err.message));
    try {
      const pubsub = app.get(PubSubService);
      const heard: unknown[] = [];
      await pubsub.subscribe('news', (m) => void heard.push(m));
      for (let n = 0; n < 10; n++) {
        await queue.add('work', { n });
        await pubsub.publish('news', n);
        expect((await app.get(RateLimitService).consume('k', { limit: 50, ttl: 60_000 })).remaining).toBe(49 - n);
      }
      expect(await waitFor(() => done.length === 10, 10_000)).toBe(true);
      expect(await waitFor(() => heard.length === 10, 2_000)).toBe(true);
      // Our SUBSCRIBE went on a connection of its own: the shared client still runs commands (BullMQ's and ours).
      expect(await client.ping()).toBe('PONG');
      expect(await app.get(CacheService).getOrSet('x', async () => 1)).toBe(1);
      await app.get(LockService).using('res', { ttl: 2_000 }, async () => undefined);
      const session = await app.get(SessionService).create('ann');
      expect((await app.get(SessionService).get(session.id))?.userId).toBe('ann');
      // Idle: the Worker's BZPOPMIN (drainDelay 5 s) on its duplicate of the client, which kept commandTimeout 1000.
      await sleep(2_500);
      expect(workerErrors.length).toBeGreaterThanOrEqual(1);
      expect(new Set(workerErrors)).toEqual(new Set(['Command timed out']));
      expect(eventErrors.length).toBeGreaterThanOrEqual(1); // QueueEvents' XREAD BLOCK 10000 likewise
      expect(new Set(eventErrors)).toEqual(new Set(['Command timed out']));
      expect((await app.get(RedisToolkitHealth).check()).status).toBe('up');
      expect(log.errors).toEqual([]);
    } finally {
      await worker.close();
    }
  });

  it('with commandTimeout 11000 (past BullMQ longest block, 10 s): the Worker on it waits without an error', async () => {
    const client = sharedClient(11_000);
    await createToolkitApp({ target: { client }, ...EVERY_FEATURE });
    const queue = closing(new Queue('long', { connection: client }));
    const done: number[] = [];
    const workerErrors: string[] = [];
    const worker = new Worker<{ n: number }>('long', async (job) => void done.push(job.data.n), { connection: client });
    worker.on('error', (err) => void workerErrors.push(err.message));
    try {
      await queue.add('work', { n: 1 });
      expect(await waitFor(() => done.length === 1, 10_000)).toBe(true);
      await sleep(2_500);
      expect(workerErrors).toEqual([]);
    } finally {
      await worker.close();
    }
  });

  it('the setting for both: BullMQ on the client, the toolkit on client.duplicate({ commandTimeout: 1000 })', async () => {
    const client = sharedClient();
    const log = recordingLogger();
    const toolkitClient = trackForCleanup(client.duplicate({ commandTimeout: 1_000 }));
    const app = await createToolkitApp({ target: { client: toolkitClient }, ...EVERY_FEATURE, logger: log.logger });
    const queue = closing(new Queue('both', { connection: client }));
    const events = closing(new QueueEvents('both', { connection: client }));
    const done: number[] = [];
    const bullErrors: string[] = [];
    const worker = new Worker<{ n: number }>('both', async (job) => void done.push(job.data.n), { connection: client });
    worker.on('error', (err) => void bullErrors.push(err.message));
    events.on('error', (err) => void bullErrors.push(err.message));
    try {
      await events.waitUntilReady();
      for (let n = 0; n < 5; n++) await queue.add('work', { n });
      expect(await waitFor(() => done.length === 5, 10_000)).toBe(true);
      expect((await app.get(RateLimitService).consume('k', { limit: 5, ttl: 60_000 })).remaining).toBe(4);
      await sleep(2_500); // idle past the toolkit's commandTimeout: BullMQ's blocking reads are not cut
      expect(bullErrors).toEqual([]);
      expect(log.errors).toEqual([]);
      expect((await app.get(RedisToolkitHealth).check()).status).toBe('up');
    } finally {
      await worker.close();
    }
  });

  it("the toolkit's REDIS_CLIENT given to BullMQ: a Queue works, a Worker's duplicate times out while idle", async () => {
    const app = await createToolkitApp({ target: { url: redis.server.url }, ...EVERY_FEATURE });
    const client = app.get(RedisConnection).client as Redis;
    const queue = closing(new Queue('ours', { connection: client }));
    const done: number[] = [];
    const workerErrors: string[] = [];
    const worker = new Worker<{ n: number }>('ours', async (job) => void done.push(job.data.n), { connection: client });
    worker.on('error', (err) => void workerErrors.push(err.message));
    try {
      await queue.add('work', { n: 1 });
      expect(await waitFor(() => done.length === 1, 10_000)).toBe(true);
      await sleep(2_500);
      expect(new Set(workerErrors)).toEqual(new Set(['Command timed out']));
    } finally {
      await worker.close();
    }
  });
});

describe('eviction policies: what each side says on noeviction and allkeys-lru', () => {
  const redis = usePrivateRedis();

  async function bootAndUse(): Promise<{ ours: string[]; bull: string[] }> {
    const bull = bullConsole();
    try {
      const log = recordingLogger();
      const app = await createToolkitApp({ target: { url: redis.server.url }, ...EVERY_FEATURE, logger: log.logger });
      const queue = closing(new Queue('evict', { connection: { host: '127.0.0.1', port: redis.server.port } }));
      await queue.add('work', { n: 1 });
      await app.get(CacheService).set('tagged', 1, { tags: ['t'] });
      await app.get(RateLimitService).consume('k', { limit: 5, ttl: 60_000 });
      await app.get(SessionService).create('ann');
      await sleep(300);
      return { ours: [...log.warnings].sort(), bull: bull.warnings };
    } finally {
      bull.restore();
    }
  }

  it('noeviction with maxmemory 100mb: no warning on either side', async () => {
    await setEvictionPolicy(redis.server.port, '100mb', 'noeviction');
    expect(await bootAndUse()).toEqual({ ours: [], bull: [] });
  });

  it('allkeys-lru with maxmemory 100mb: one warning per feature that an eviction breaks, and BullMQ warns', async () => {
    await setEvictionPolicy(redis.server.port, '100mb', 'allkeys-lru');
    const { ours, bull } = await bootAndUse();
    expect(ours.map((w) => w.slice(0, w.indexOf(':')))).toEqual(['cache', 'locks', 'rate limiting', 'sessions']);
    for (const w of ours) expect(w).toContain('noeviction');
    expect(bull).toEqual(['IMPORTANT! Eviction policy is allkeys-lru. It should be "noeviction"']);
  });

  it('allkeys-lru without maxmemory: nothing is evicted, we say nothing; BullMQ warns all the same', async () => {
    await setEvictionPolicy(redis.server.port, '0', 'allkeys-lru');
    const { ours, bull } = await bootAndUse();
    expect(ours).toEqual([]);
    expect(bull).toEqual(['IMPORTANT! Eviction policy is allkeys-lru. It should be "noeviction"']);
  });
});
