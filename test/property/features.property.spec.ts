/**
 * Property-based invariants of the rate limiter and the lock, written against the agreed API (DESIGN.md).
 *
 * They run against the real services: a missing method is a type error and a failing test, never a skip.
 */
import 'reflect-metadata';
import fc from 'fast-check';
import { LockService, RateLimitService } from '../../lib/index.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

afterEach(closeToolkitApps);

describe('rate limiter invariant (property): no window admits more than the limit', () => {
  const run = `${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  let n = 0;

  it.each(['sliding-window', 'fixed-window', 'token-bucket'] as const)(
    '%s: a concurrent burst of n admits exactly min(n, limit)',
    async (algorithm) => {
      const { get } = await createToolkitApp({ target: 'single' });
      const rl = get(RateLimitService);
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 60 }), async (limit, calls) => {
          const key = `prop:burst:${run}:${n++}`;
          const results = await Promise.all(
            Array.from({ length: calls }, () => rl.consume(key, { limit, ttl: 60_000, algorithm })),
          );
          expect(results.filter((r) => r.allowed).length).toBe(Math.min(calls, limit));
        }),
        { numRuns: 25 },
      );
    },
  );

  it.each(['sliding-window', 'fixed-window', 'token-bucket'] as const)(
    '%s: random arrival sequences never exceed the bound in any window',
    async (algorithm) => {
      const { get } = await createToolkitApp({ target: 'single' });
      const rl = get(RateLimitService);
      const ttl = 200;
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 5 }),
          fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 5, maxLength: 25 }),
          async (limit, gaps) => {
            const key = `prop:seq:${run}:${n++}`;
            /** [sent, answered] of every admitted call: the server decided somewhere in between. */
            const admitted: [number, number][] = [];
            for (const gap of gaps) {
              await sleep(gap);
              const sent = performance.now();
              const r = await rl.consume(key, { limit, ttl, algorithm });
              if (r.allowed) admitted.push([sent, performance.now()]);
            }
            // Any limit+1 admitted calls that certainly fell within one window (the last answered less than `ttl`
            // after the first was sent) would break the limit. Fixed windows may admit 2×limit across a boundary; a
            // token bucket refills limit/ttl per ms.
            for (let i = 0; i < admitted.length; i++) {
              for (let j = i + 1; j < admitted.length; j++) {
                const span = admitted[j][1] - admitted[i][0];
                if (span >= ttl) break;
                const count = j - i + 1;
                const bound =
                  algorithm === 'sliding-window'
                    ? limit
                    : algorithm === 'fixed-window'
                      ? 2 * limit
                      : limit + Math.ceil((limit * span) / ttl);
                expect(count).toBeLessThanOrEqual(bound);
              }
            }
          },
        ),
        { numRuns: 8 },
      );
    },
  );
});

describe('lock mutual exclusion (property): random schedules never overlap', () => {
  it('two app instances, random start delays and hold times: one holder at a time, fencing tokens strictly increase', async () => {
    const apps = await Promise.all([createToolkitApp({ target: 'single' }), createToolkitApp({ target: 'single' })]);
    const locks = apps.map((a) => a.get(LockService));
    let round = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            app: fc.integer({ min: 0, max: 1 }),
            start: fc.integer({ min: 0, max: 30 }),
            hold: fc.integer({ min: 0, max: 15 }),
          }),
          {
            minLength: 2,
            maxLength: 12,
          },
        ),
        async (schedule) => {
          const resource = `prop:lock:${Date.now()}:${round++}`;
          let inside = 0;
          let maxInside = 0;
          const tokens: number[] = [];
          await Promise.all(
            schedule.map(async ({ app, start, hold }) => {
              await sleep(start);
              const lock = await locks[app].acquire(resource, { ttl: 5_000, waitMs: 5_000 });
              inside++;
              maxInside = Math.max(maxInside, inside);
              tokens.push(lock.fencingToken);
              await sleep(hold);
              inside--;
              await lock.release();
            }),
          );
          expect(maxInside).toBe(1);
          expect(tokens).toHaveLength(schedule.length);
          for (let i = 1; i < tokens.length; i++) expect(tokens[i]).toBeGreaterThan(tokens[i - 1]);
        },
      ),
      { numRuns: 15 },
    );
  });
});
