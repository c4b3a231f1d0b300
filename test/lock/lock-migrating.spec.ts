/**
 * Every "after" block of docs/migrating.md's redlock and redis-semaphore sections, taken from the Markdown by its
 * marker and run against real Redis, so the guide and the code cannot drift apart. `locks` is a LockService of an app
 * with its own key prefix; the helpers the blocks call (`step`, `work`, `abort`) record what happened.
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import type { DynamicModule } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { LockNotAcquiredError, LockService, RedisToolkitModule } from '../../lib/index.js';
import { docSnippet } from '../support/doc-snippets.js';
import { lockAppOptions } from '../support/lock-modes.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

afterEach(closeToolkitApps);

const AsyncFunction = Object.getPrototypeOf(async () => undefined).constructor as new (
  ...args: string[]
) => (...values: unknown[]) => Promise<unknown>;

/** Runs the block named `name` with the given names in scope; `result` (when given) is returned from it. */
function run(name: string, scope: Record<string, unknown>, result?: string): Promise<unknown> {
  const code = docSnippet('docs/migrating.md', name).replace(/^\/\/ after\n/, '');
  const fn = new AsyncFunction(...Object.keys(scope), result ? `${code}\nreturn ${result};` : code);
  return fn(...Object.values(scope));
}

async function isolatedLocks(mode: 'single' | 'quorum' = 'single'): Promise<LockService> {
  const app = await createToolkitApp({ ...lockAppOptions(mode), keyPrefix: `mig:${randomUUID()}:` });
  return app.get(LockService);
}

function recorder() {
  const calls: unknown[][] = [];
  let running = 0;
  let most = 0;
  const fn =
    (ms = 0) =>
    async (...args: unknown[]) => {
      calls.push(args);
      running++;
      most = Math.max(most, running);
      await sleep(ms);
      running--;
    };
  return { calls, fn, most: () => most };
}

const errors = { LockNotAcquiredError, console: { error: (..._: unknown[]) => undefined } };

describe('docs/migrating.md: redlock', () => {
  it('redlock-settings: the module boots on 3 quorum nodes with the retry, drift and threshold settings', async () => {
    const [a, b, c] = sharedServers().quorum;
    const env = {
      REDIS_URL: sharedServers().single.url,
      REDIS_A_URL: a.url,
      REDIS_B_URL: b.url,
      REDIS_C_URL: c.url,
    };
    const toolkit = (await run(
      'redlock-settings',
      { RedisToolkitModule, process: { env } },
      'toolkit',
    )) as DynamicModule;
    const moduleRef = await Test.createTestingModule({ imports: [toolkit] }).compile();
    const app = moduleRef.createNestApplication({ logger: ['error'] });
    await app.init();
    try {
      const locks = app.get(LockService);
      expect(locks.nodes).toBe(3);
      const resolved = (locks as unknown as { lockOptions: Record<string, unknown> }).lockOptions;
      expect(resolved).toMatchObject({
        retry: { count: 10, delay: 200, jitter: 200 },
        extensionThreshold: 500,
        quorum: { driftFactor: 0.01 },
      });
      const lock = await locks.acquire(`mig:${randomUUID()}`);
      await lock.release();
    } finally {
      await app.close();
    }
  });

  it('redlock-acquire: one resource with retries, extend, release; two resources all or none', async () => {
    const locks = await isolatedLocks('quorum');
    const seen: string[] = [];
    for (const name of ['acquired', 'extended', 'released'] as const)
      locks.events.on(name, (e) => seen.push(`${name} ${e.kind}`));
    await run('redlock-acquire', { locks });
    expect(seen).toEqual(['acquired lock', 'extended lock', 'released lock', 'acquired multi', 'released multi']);
    expect(await locks.tryAcquire('account:1')).not.toBeNull();
  });

  it('redlock-using: step gets the fencing token; the lock is extended past the threshold and released', async () => {
    const locks = await isolatedLocks();
    const step = recorder();
    let extended = 0;
    locks.events.on('extended', () => extended++);
    const slowStep = async (fence: unknown) => {
      await step.fn()(fence);
      await sleep(4_200); // past ttl 5 s − threshold 1 s
    };
    await run('redlock-using', { locks, step: slowStep });
    expect(step.calls).toHaveLength(1);
    expect(step.calls[0]).toEqual([expect.any(Number)]);
    expect(step.calls[0][0]).toBeGreaterThan(0);
    expect(extended).toBeGreaterThanOrEqual(1);
    expect(await locks.tryAcquire('report')).not.toBeNull();
  }, 20_000);

  it('redlock-events: a busy lock is caught as LockNotAcquiredError, lost locks are reported', async () => {
    const locks = await isolatedLocks();
    const busy: string[] = [];
    locks.events.on('busy', (e) => busy.push(e.resource));
    const holder = await locks.acquire('invoice:42');
    await run('redlock-events', { locks, ...errors });
    expect(busy).toEqual(['invoice:42']);
    expect(locks.events.listenerCount('lost')).toBe(1);
    await holder.release();
  });
});

describe('docs/migrating.md: redis-semaphore', () => {
  it('semaphore-mutex: kept alive past its ttl while work runs, onLost not called, released after', async () => {
    const locks = await isolatedLocks();
    const work = recorder();
    const lost: unknown[] = [];
    let extended = 0;
    locks.events.on('extended', () => extended++);
    await run('semaphore-mutex', { locks, work: work.fn(3_500), abort: (err: unknown) => lost.push(err) });
    expect(work.calls).toHaveLength(1);
    expect(extended).toBeGreaterThanOrEqual(2);
    expect(lost).toEqual([]);
    expect(await locks.tryAcquire('job')).not.toBeNull();
  }, 20_000);

  it('semaphore-attempts: free → acquired and released; held elsewhere → LockNotAcquiredError after 3 attempts', async () => {
    const locks = await isolatedLocks();
    await run('semaphore-attempts', { locks });
    const holder = await locks.acquire('job');
    await expect(run('semaphore-attempts', { locks })).rejects.toThrow(/3 attempts/);
    await holder.release();
  });

  it('semaphore-semaphore: 8 callers, at most 3 at once, all of them run', async () => {
    const locks = await isolatedLocks();
    const work = recorder();
    await Promise.all(Array.from({ length: 8 }, () => run('semaphore-semaphore', { locks, work: work.fn(30) })));
    expect(work.calls).toHaveLength(8);
    expect(work.most()).toBe(3);
    for (const [signal] of work.calls) expect(signal).toBeInstanceOf(AbortSignal);
  });
});
