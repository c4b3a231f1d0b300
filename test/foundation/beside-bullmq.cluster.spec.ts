/**
 * The toolkit beside BullMQ (@nestjs/bullmq) on a Redis Cluster, as teams run it there: BullMQ on an ioredis Cluster
 * with the hash-tagged queue prefix its docs require (`prefix: '{bull}'`, every key of a queue in one slot), the
 * toolkit on `{ cluster }` or a `{ client }` Cluster, with every feature on (the cache with tags and its L1 on CLIENT
 * TRACKING, one connection per master; rate limits; sessions; locks; pub/sub sharded and classic). The single-server
 * counterpart is beside-bullmq.spec.ts; this file pins the same on a private 3-master cluster (CONFIG SET and ACL
 * SETUSER on every master, exact key snapshots per master): docs/connections.md, "Beside BullMQ".
 */
import 'reflect-metadata';
import { Injectable } from '@nestjs/common';
import { BullModule, getQueueToken, Processor, WorkerHost } from '@nestjs/bullmq';
import { type Job, Queue, QueueEvents, Worker } from 'bullmq';
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import { readFileSync } from 'node:fs';
import {
  CacheService,
  InvalidOptionsError,
  LockService,
  PubSubService,
  RateLimitService,
  REDIS_CLIENT,
  RedisSessionStore,
  RedisToolkitHealth,
  SessionService,
} from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { bullConsole, clientList, closing } from '../support/bullmq.js';
import { recordCommands } from '../support/command-recorder.js';
import { errorOf } from '../support/errors.js';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import { trackForCleanup } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { scanAll } from '../support/scan.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

// One private cluster for the file: the eviction and ACL cases reconfigure every master, and the snapshots compare
// every key of a prefix, which the shared cluster's other suites would also write.
const cluster = useDisposableCluster();

const EVERY_FEATURE = {
  cache: { l1: { max: 1_000, ttl: 60_000 } },
  rateLimit: {},
  session: {},
  lock: {},
  pubsub: {},
} as const;

/** BullMQ's documented cluster setting: a hash-tagged prefix, so that each queue's keys share one slot. */
const BULL_PREFIX = '{bull}';

/** A master's admin connection, closed after the test. */
const adminOf = (port: number) => trackForCleanup(new Redis(port, '127.0.0.1'));

/** The Cluster a BullMQ user builds: BullMQ wants maxRetriesPerRequest null on its (node) connections. */
const bullCluster = (redisOptions: RedisOptions = {}, options: ClusterOptions = {}) =>
  trackForCleanup(
    new Cluster(cluster().startupNodes, { ...options, redisOptions: { maxRetriesPerRequest: null, ...redisOptions } }),
  );

/**
 * Every key matching `pattern` on every master, with its type, whether it expires and its DUMP: equal snapshots mean
 * no key was added, deleted or changed (a TTL's remaining ms is left out: it runs down by itself).
 */
async function snapshot(pattern: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const master of cluster().masters) {
    const admin = adminOf(master.port);
    for (const key of (await scanAll(admin, pattern)).sort()) {
      const [type, pttl, dump] = await Promise.all([admin.type(key), admin.pttl(key), admin.dumpBuffer(key)]);
      out[`${master.port} ${key}`] = `${type} ${pttl >= 0 ? 'expires' : 'persists'} ${dump?.toString('hex')}`;
    }
  }
  return out;
}

/** FLUSHALL on every master of the private cluster (never the shared one). */
async function flushCluster(): Promise<void> {
  await Promise.all(cluster().masters.map((m) => adminOf(m.port).flushall()));
}

const processed: number[] = [];
const jobLimits: number[] = [];

@Injectable()
@Processor('jobs')
class JobsProcessor extends WorkerHost {
  constructor(
    private readonly cache: CacheService,
    private readonly locks: LockService,
    private readonly limits: RateLimitService,
    private readonly sessions: SessionService,
    private readonly pubsub: PubSubService,
  ) {
    super();
  }

  /** A job that uses every feature: a lock around a tagged cache write, a rate-limit decision, a session, a publish. */
  async process(job: Job<{ n: number }>): Promise<number> {
    const { n } = job.data;
    await this.locks.using(`job:${n}`, { ttl: 5_000 }, () => this.cache.set(`job:${n}`, { n }, { tags: ['jobs'] }));
    jobLimits.push((await this.limits.consume('jobs', { limit: 100, ttl: 60_000 })).remaining);
    await this.sessions.create(`worker${n % 2}`, { job: n });
    await this.pubsub.publish('done', n);
    processed.push(n);
    return n * 2;
  }
}

describe('separate connections: BullModule on a Cluster with prefix {bull}, the toolkit on { cluster }', () => {
  beforeEach(async () => {
    processed.length = 0;
    jobLimits.length = 0;
    await flushCluster();
  });

  async function boot(pubsubMode: 'sharded' | 'classic' = 'sharded') {
    const log = recordingLogger();
    const app = await createToolkitApp({
      target: { cluster: cluster().startupNodes },
      ...EVERY_FEATURE,
      pubsub: { cluster: pubsubMode },
      logger: log.logger,
      imports: [
        BullModule.forRoot({ connection: bullCluster(), prefix: BULL_PREFIX }),
        BullModule.registerQueue({ name: 'jobs' }),
      ],
      providers: [JobsProcessor],
    });
    return { app, log, queue: app.get<Queue>(getQueueToken('jobs')) };
  }

  it.each(['sharded', 'classic'] as const)(
    'pub/sub %s: 20 jobs use every feature while the app does too; counts exact, 0 failed, nothing logged',
    async (mode) => {
      const bull = bullConsole();
      try {
        const { app, log, queue } = await boot(mode);
        const cache = app.get(CacheService);
        const limits = app.get(RateLimitService);
        const sessions = app.get(SessionService);
        const pubsub = app.get(PubSubService);
        const heard: unknown[] = [];
        const jobsDone: unknown[] = [];
        await pubsub.subscribe('news', (m) => void heard.push(m));
        await pubsub.subscribe('done', (m) => void jobsDone.push(m));

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
        expect(await waitFor(() => heard.length === 20 && jobsDone.length === 20, 2_000)).toBe(true);
        // Sharded: each channel's messages in the order published. Classic on a cluster keeps the order within one
        // event-loop turn only (each turn's call may be relayed by another master: docs/pubsub.md), so sorted there.
        const inOrder = (got: unknown[]) => (mode === 'sharded' ? got : [...got].sort((a, b) => Number(a) - Number(b)));
        expect(inOrder(heard)).toEqual([...Array(20).keys()]);
        expect(inOrder(jobsDone)).toEqual([...Array(20).keys()]);
        expect(processed).toEqual([...Array(20).keys()]);
        expect(remaining).toEqual(Array.from({ length: 20 }, (_, i) => 99 - i));
        expect(jobLimits).toEqual(Array.from({ length: 20 }, (_, i) => 99 - i));
        expect(await queue.getJobCounts('completed', 'failed')).toEqual({ completed: 20, failed: 0 });
        for (const [n, id] of sessionIds.entries()) expect((await sessions.get(id))?.data).toEqual({ n });
        expect((await sessions.listForUser('worker0')).length).toBe(10);
        expect((await sessions.listForUser('worker1')).length).toBe(10);
        expect(await cache.get('job:7')).toEqual({ n: 7 });

        // Every key of the queue in the {bull} slot, on one master; ours spread over the masters.
        const bullKeys = Object.keys(await snapshot(`${BULL_PREFIX}:*`));
        expect(bullKeys.length).toBeGreaterThan(20);
        expect(new Set(bullKeys.map((k) => k.slice(0, k.indexOf(' ')))).size).toBe(1);

        // CLIENT TRACKING is BCAST on the cache's prefix only: 20 jobs' worth of {bull}:* writes left the L1 entry.
        const client = app.get(RedisConnection).client as Cluster;
        for (const node of client.nodes('master')) {
          const tracking = (await node.call('CLIENT', 'TRACKINGINFO')) as unknown[];
          expect(tracking).toEqual([
            'flags',
            ['on', 'bcast', 'noloop'],
            'redirect',
            expect.any(Number),
            'prefixes',
            ['rtk:cache:'],
          ]);
        }
        const { commands } = await recordCommands(client, async () => cache.get('hot'));
        expect(commands).toEqual([]); // served from L1: not invalidated
        // ... while a tagged invalidation reaches every entry the jobs wrote, on whichever master
        expect(await cache.invalidateTags('jobs')).toBe(20);
        expect(await cache.get('job:7')).toBeUndefined();

        expect((await app.get(RedisToolkitHealth).check()).status).toBe('up');
        // BullMQ's blocking read is on a connection of its own (its duplicate of the Cluster), not the toolkit's
        const ours = new Set(await Promise.all(client.nodes('master').map(async (n) => String(await n.client('ID')))));
        const blocked = (await Promise.all(cluster().masters.map((m) => clientList(adminOf(m.port)))))
          .flat()
          .filter((c) => c.cmd === 'bzpopmin');
        expect(blocked).toHaveLength(1);
        expect(ours.has(blocked[0]?.id ?? '')).toBe(false);
        expect(log.warnings).toEqual([]);
        expect(log.errors).toEqual([]);
        expect(bull.warnings).toEqual([]);
        expect(bull.errors).toEqual([]);
      } finally {
        bull.restore();
      }
    },
  );

  it("the toolkit's clearing leaves every {bull}:* key as it was; BullMQ's obliterate every key of ours", async () => {
    const { app, queue } = await boot();
    const cache = app.get(CacheService);
    const sessions = app.get(SessionService);
    const limits = app.get(RateLimitService);
    for (let n = 0; n < 10; n++) await queue.add('work', { n });
    expect(await waitFor(() => processed.length === 10, 10_000)).toBe(true);
    // The Worker idle: nothing of BullMQ's changes between the snapshots but what the toolkit would do.
    await app.get(JobsProcessor).worker.close();
    await cache.set('products:1', 1);
    await cache.set('other', 2, { tags: ['t'] });
    await sessions.create('ann');
    await limits.consume('ip:1', { limit: 5, ttl: 60_000 });
    const bullKeys = await snapshot(`${BULL_PREFIX}:*`);
    expect(Object.keys(bullKeys).length).toBeGreaterThan(10); // jobs, their logs, meta, events, id...

    expect(await cache.invalidateTags('t')).toBe(1);
    expect(await snapshot(`${BULL_PREFIX}:*`)).toEqual(bullKeys);
    expect(await cache.invalidatePattern('*')).toBe(11); // products:1 and the 10 job:<n> of the processor
    expect(await snapshot(`${BULL_PREFIX}:*`)).toEqual(bullKeys);
    await cache.set('again', 3);
    // clear() deletes every key of the cache's prefix: 'again' and the tag indexes the jobs' entries left
    const cacheKeys = Object.keys(await snapshot('rtk:cache:*'));
    expect(cacheKeys.filter((k) => k.endsWith(':again'))).toHaveLength(1);
    expect(await cache.clear()).toBe(cacheKeys.length);
    expect(await snapshot('rtk:cache:*')).toEqual({});
    expect(await snapshot(`${BULL_PREFIX}:*`)).toEqual(bullKeys);
    expect(await sessions.destroyAllForUser('worker0')).toBe(5);
    expect(await limits.reset('ip:1')).toBeGreaterThanOrEqual(1);
    expect(await snapshot(`${BULL_PREFIX}:*`)).toEqual(bullKeys);
    // express-session's clear(): every session of the prefix, on every master
    const store = new RedisSessionStore({ client: app.get(REDIS_CLIENT) });
    expect(await store.length()).toBe(6); // ann and worker1's five
    await store.clear();
    expect(await store.length()).toBe(0);
    expect(await snapshot(`${BULL_PREFIX}:*`)).toEqual(bullKeys);

    await cache.set('kept', 4);
    await sessions.create('bob');
    await limits.consume('ip:2', { limit: 5, ttl: 60_000 });
    const ours = await snapshot('rtk:*');
    expect(Object.keys(ours).filter((k) => k.includes(' rtk:cache:'))).toHaveLength(1);
    await queue.pause();
    await queue.obliterate({ force: true });
    expect(await snapshot(`${BULL_PREFIX}:jobs:*`)).toEqual({});
    expect(await snapshot('rtk:*')).toEqual(ours);
    expect(await cache.get('kept')).toBe(4);
  });
});

describe("startup checks: eviction policy and ACL on every master, beside BullMQ's", () => {
  beforeEach(flushCluster);
  afterEach(async () => {
    for (const m of cluster().masters) {
      const admin = adminOf(m.port);
      await admin.config('SET', 'maxmemory', '0');
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      await admin.call('ACL', 'DELUSER', 'app');
    }
  });

  async function setEvictionPolicy(maxmemory: string, policy: string): Promise<void> {
    for (const m of cluster().masters) {
      const admin = adminOf(m.port);
      await admin.config('SET', 'maxmemory', maxmemory);
      await admin.config('SET', 'maxmemory-policy', policy);
    }
  }

  /** Boots the toolkit (every feature) and a BullMQ Queue + Worker, runs a job and each check's trigger. */
  async function bootAndUse(target: {
    cluster: { host: string; port: number }[];
    username?: string;
    password?: string;
  }) {
    const bull = bullConsole();
    try {
      const log = recordingLogger();
      const app = await createToolkitApp({ target, ...EVERY_FEATURE, logger: log.logger });
      const connection = bullCluster();
      const queue = closing(new Queue('evict', { connection, prefix: BULL_PREFIX }));
      const done: number[] = [];
      const worker = new Worker<{ n: number }>('evict', async (job) => void done.push(job.data.n), {
        connection,
        prefix: BULL_PREFIX,
      });
      trackForCleanup({ stop: () => worker.close() });
      await queue.add('work', { n: 1 });
      await app.get(CacheService).set('tagged', 1, { tags: ['t'] });
      await app.get(RateLimitService).consume('k', { limit: 5, ttl: 60_000 });
      await app.get(SessionService).create('ann');
      await app.get(PubSubService).publish('news', 1);
      expect(await waitFor(() => done.length === 1, 10_000)).toBe(true);
      await sleep(300); // the checks that run on first use
      return { ours: [...log.warnings].sort(), errors: log.errors, bull: bull.warnings, bullErrors: bull.errors };
    } finally {
      bull.restore();
    }
  }

  it('noeviction with maxmemory 100mb on every master: nothing said on either side', async () => {
    await setEvictionPolicy('100mb', 'noeviction');
    expect(await bootAndUse({ cluster: cluster().startupNodes })).toEqual({
      ours: [],
      errors: [],
      bull: [],
      bullErrors: [],
    });
  });

  it('allkeys-lru with maxmemory 100mb: one warning per feature naming every master, and BullMQ warns', async () => {
    await setEvictionPolicy('100mb', 'allkeys-lru');
    const { ours, bull } = await bootAndUse({ cluster: cluster().startupNodes });
    expect(ours.map((w) => w.slice(0, w.indexOf(':')))).toEqual(['cache', 'locks', 'rate limiting', 'sessions']);
    for (const w of ours) {
      expect(w).toContain('noeviction');
      for (const m of cluster().masters) expect(w).toContain(`127.0.0.1:${m.port}`);
    }
    expect(new Set(bull)).toEqual(new Set(['IMPORTANT! Eviction policy is allkeys-lru. It should be "noeviction"']));
  });

  it('the toolkit on the ACL user docs/security.md gives (every master), BullMQ on its own: nothing said', async () => {
    const doc = readFileSync(new URL('../../docs/security.md', import.meta.url), 'utf8');
    const line = doc.split('\n').find((l) => l.startsWith('ACL SETUSER app '));
    const rules = (line ?? '').trim().split(/\s+/).slice(3);
    expect(rules).toContain('>long-random-password');
    for (const m of cluster().masters) await adminOf(m.port).call('ACL', 'SETUSER', 'app', 'reset', ...rules);
    const target = { cluster: cluster().startupNodes, username: 'app', password: 'long-random-password' };
    expect(await bootAndUse(target)).toEqual({ ours: [], errors: [], bull: [], bullErrors: [] });
  });
});

describe('one Cluster client shared by BullMQ and the toolkit', () => {
  beforeEach(flushCluster);

  it('without a commandTimeout: refused, the message naming what suits a Cluster (redisOptions)', async () => {
    const client = bullCluster();
    const err = await errorOf(() => createToolkitApp({ target: { client }, ...EVERY_FEATURE }));
    expect(err).toBeInstanceOf(InvalidOptionsError);
    const { message } = err as InvalidOptionsError;
    expect(message).toContain('connection.client has no commandTimeout');
    // A Cluster's node options go in redisOptions; maxRedirections 46 lets a call wait its commandTimeout while a
    // slot migrates (ioredis's 16 is a warning at start, the next case)
    expect(message).toContain('new Cluster(nodes, { maxRedirections: 46, redisOptions: { commandTimeout: 1000 } })');
    expect(message).toContain('BullMQ');
    // Cluster.duplicate's first argument is the startup nodes; its options merge redisOptions (ioredis 6)
    expect(message).toContain('cluster.duplicate([], { maxRedirections: 46, redisOptions: { commandTimeout: 1000 } })');
    expect(message).not.toContain('client.duplicate({ commandTimeout: 1000 })');
    expect(client.status).not.toBe('end'); // left open: it is the user's
  });

  it('what the refusal says works (the toolkit on a duplicate with a timeout); a Cluster with one cuts BullMQ', async () => {
    const client = bullCluster();
    const toolkitClient = trackForCleanup(
      client.duplicate([], { maxRedirections: 46, redisOptions: { commandTimeout: 1_000 } }),
    );
    expect(toolkitClient.options.redisOptions).toMatchObject({ maxRetriesPerRequest: null, commandTimeout: 1_000 });
    const log = recordingLogger();
    const app = await createToolkitApp({ target: { client: toolkitClient }, ...EVERY_FEATURE, logger: log.logger });
    const queue = closing(new Queue('both', { connection: client, prefix: BULL_PREFIX }));
    const events = closing(new QueueEvents('both', { connection: client, prefix: BULL_PREFIX }));
    const done: number[] = [];
    const bullErrors: string[] = [];
    const worker = new Worker<{ n: number }>(
      'both',
      async (job) => {
        await app.get(LockService).using(`both:${job.data.n}`, { ttl: 2_000 }, async () => undefined);
        done.push(job.data.n);
      },
      { connection: client, prefix: BULL_PREFIX },
    );
    trackForCleanup({ stop: () => worker.close() });
    worker.on('error', (err) => void bullErrors.push(err.message));
    events.on('error', (err) => void bullErrors.push(err.message));
    // Beside it, what does not work (idle as long): BullMQ on a Cluster with commandTimeout 1000, the one it shares
    // with the toolkit or the toolkit's own REDIS_CLIENT. Its Worker's duplicate keeps the timeout.
    const shared = bullCluster({ commandTimeout: 1_000 }, { maxRedirections: 46 });
    await createToolkitApp({ target: { client: shared }, ...EVERY_FEATURE, keyPrefix: 'rtk2:' });
    const ours = await createToolkitApp({ target: { cluster: cluster().startupNodes }, keyPrefix: 'rtk3:' });
    const cutWorkers = { shared: shared, ours: ours.get<Cluster>(REDIS_CLIENT) };
    const cut: Record<string, { done: number; errors: string[] }> = {};
    for (const [name, connection] of Object.entries(cutWorkers)) {
      const state = (cut[name] = { done: 0, errors: [] as string[] });
      const cutQueue = closing(new Queue(name, { connection, prefix: BULL_PREFIX }));
      const cutWorker = new Worker(name, async () => void state.done++, { connection, prefix: BULL_PREFIX });
      trackForCleanup({ stop: () => cutWorker.close() });
      cutWorker.on('error', (err) => void state.errors.push(err.message));
      await cutQueue.add('work', {});
    }

    await events.waitUntilReady();
    for (let n = 0; n < 5; n++) await queue.add('work', { n });
    expect(await waitFor(() => done.length === 5, 10_000)).toBe(true);
    expect((await app.get(RateLimitService).consume('k', { limit: 5, ttl: 60_000 })).remaining).toBe(4);
    await sleep(2_500); // idle past the toolkit's commandTimeout: BullMQ's blocking reads are not cut
    expect(bullErrors).toEqual([]);
    expect(await queue.getJobCounts('completed', 'failed')).toEqual({ completed: 5, failed: 0 });
    expect(log.errors).toEqual([]);
    expect(log.warnings).toEqual([]);
    expect((await app.get(RedisToolkitHealth).check()).status).toBe('up');
    // ... where a Cluster with commandTimeout 1000 has the Worker's BZPOPMIN cut while idle (its job still ran)
    for (const name of Object.keys(cutWorkers)) {
      expect(cut[name]?.done).toBe(1);
      expect(cut[name]?.errors.length).toBeGreaterThanOrEqual(1);
      expect(new Set(cut[name]?.errors)).toEqual(new Set(['Command timed out']));
    }
  });
});
