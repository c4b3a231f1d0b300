/**
 * A real network partition: three Redis servers, each a host of its own in a network namespace behind a veth link
 * (test/support/netns.ts); a partition is one link set down — packets are dropped, open connections hang, nothing
 * answers "refused". While one node is cut off:
 *  - quorum (Redlock) locks keep mutual exclusion and fencing order on the two nodes left, and a lock held when the
 *    cut happens stays held (nobody else gets it) until its owner releases it;
 *  - a rate limit on the cut-off server admits no more than its limit (failOpen: false refuses; the insurance
 *    limiter admits at most the limit), and after the heal Redis still remembers what was used before the cut;
 *  - no call waits past commandTimeout plus a margin for a busy 2-core machine.
 * Needs root (CI runs as root): without it the suite FAILS under CI and is skipped, saying why, elsewhere.
 */
import 'reflect-metadata';
import { LockService, RateLimitService, RedisUnavailableError } from '../../lib/index.js';
import { netnsUnsupported, startNamespacedRedis, type NetnsHosts } from '../support/netns.js';
import { probePing } from '../support/resp.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { sleep, waitFor } from '../support/wait.js';
import { countUnhandledRejections, settleRejections } from '../support/unhandled.js';

/** 1 s: at 500 ms a healthy node missed it now and then on this 2-core box at load average 23 (two nodes then). */
const COMMAND_TIMEOUT = 1_000;
/**
 * What a call may take beyond commandTimeout: a quorum call that is undone waits for the granting nodes' release
 * (fast, they are up) and the event loop of a shared 2-core machine under load. Without the timeout a call on a cut
 * link would hang for minutes (TCP retransmission), so this bound still tells a bounded call from a hanging one.
 */
const MARGIN_MS = 1_000;
const BOUND_MS = COMMAND_TIMEOUT + MARGIN_MS;

const unsupported = netnsUnsupported();

if (unsupported && process.env.CI)
  it('network namespaces can be created (CI runs as root: the partition scenario must run there)', () => {
    throw new Error(`the partition scenario cannot run under CI: ${unsupported}`);
  });

/** Runs `fn`, records how long it took under `label`. */
async function timed<T>(durations: Map<string, number[]>, label: string, fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    return await fn();
  } finally {
    const list = durations.get(label) ?? [];
    list.push(performance.now() - started);
    durations.set(label, list);
  }
}

function overBound(durations: Map<string, number[]>): string[] {
  const over: string[] = [];
  for (const [label, list] of durations) {
    const max = Math.max(...list);
    if (max > BOUND_MS) over.push(`${label}: ${max.toFixed(0)} ms > ${BOUND_MS} ms (${list.length} calls)`);
  }
  return over;
}

const summary = (durations: Map<string, number[]>): string =>
  [...durations]
    .map(([label, list]) => `${label} ${list.length} calls, max ${Math.max(...list).toFixed(0)} ms`)
    .join('; ');

(unsupported ? describe.skip : describe)(
  `network partition: Redis servers on hosts of their own (veth link down)${unsupported ? ` (skipped: ${unsupported})` : ''}`,
  () => {
    let hosts: NetnsHosts;

    beforeAll(async () => {
      hosts = await startNamespacedRedis(3);
    }, 60_000);

    afterEach(async () => {
      await closeToolkitApps();
      for (const s of hosts?.servers ?? []) if (s.partitioned()) s.heal();
    });

    afterAll(async () => {
      await hosts?.stop();
    });

    const quorumOf = (): { nodes: { url: string }[] } => ({ nodes: hosts.servers.map((s) => ({ url: s.url })) });

    it('quorum locks with node 3 cut off: one holder at a time, fencing tokens in order, a held lock stays held, no call past commandTimeout', async () => {
      const rejections = countUnhandledRejections();
      const [a, b] = await Promise.all(
        [0, 1].map(() =>
          bootToolkitApp({
            target: { url: hosts.servers[0].url },
            commandTimeout: COMMAND_TIMEOUT,
            lock: { quorum: quorumOf() },
          }),
        ),
      );
      const lockA = a.get(LockService);
      const lockB = b.get(LockService);
      const durations = new Map<string, number[]>();
      const resource = `partition-${Date.now()}`;

      // All three nodes up: a lock to compare the later tokens with.
      const before = await lockA.acquire(resource, { ttl: 10_000 });
      await before.release();

      // A holds the lock when the link to node 3 goes down.
      const held = await lockA.acquire(resource, { ttl: 10_000 });
      expect(held.fencingToken).toBeGreaterThan(before.fencingToken);
      hosts.servers[2].partition();
      // Nobody else gets it while it is held (the two nodes left both say "taken"), and asking does not hang.
      for (let i = 0; i < 5; i++) {
        expect(await timed(durations, 'tryAcquire (held by A)', () => lockB.tryAcquire(resource, { ttl: 5_000 }))).toBe(
          null,
        );
      }
      await timed(durations, 'release', () => held.release());
      const next = await timed(durations, 'tryAcquire', () => lockB.tryAcquire(resource, { ttl: 5_000 }));
      expect(next?.fencingToken).toBeGreaterThan(held.fencingToken);
      await next?.release();

      // Two apps × three callers contend for 3 s while node 3 stays cut off.
      let inside = 0;
      let maxInside = 0;
      let attempts = 0;
      let busy = 0;
      let unavailable = 0;
      const tokens: number[] = [];
      const unexpected: string[] = [];
      const deadline = Date.now() + 3_000;
      await Promise.all(
        [lockA, lockB].flatMap((lock) =>
          [0, 1, 2].map(async () => {
            while (Date.now() < deadline) {
              attempts++;
              let got: Awaited<ReturnType<LockService['tryAcquire']>>;
              try {
                got = await timed(durations, 'tryAcquire', () => lock.tryAcquire(resource, { ttl: 5_000 }));
              } catch (err) {
                // Two nodes must answer; on a starved machine a healthy one can miss commandTimeout: typed, counted.
                if (err instanceof RedisUnavailableError) unavailable++;
                else unexpected.push(`tryAcquire: ${String(err)}`);
                continue;
              }
              if (got === null) {
                busy++;
                await sleep(2);
                continue;
              }
              inside++;
              maxInside = Math.max(maxInside, inside);
              tokens.push(got.fencingToken);
              await sleep(3);
              inside--;
              const lock_ = got;
              await timed(durations, 'release', () => lock_.release()).catch((err: unknown) => {
                // A release the majority could not confirm expires by itself (ttl): typed and counted, not unexpected.
                if (err instanceof RedisUnavailableError) unavailable++;
                else unexpected.push(`release: ${String(err)}`);
              });
            }
          }),
        ),
      );

      // Heal: node 3 answers again and the locks carry on, tokens still growing.
      hosts.servers[2].heal();
      expect(
        await waitFor(
          async () => (await probePing(hosts.servers[2].port, { host: hosts.servers[2].host })) === 'pong',
          10_000,
        ),
      ).toBe(true);
      const after = await lockA.acquire(resource, { ttl: 5_000, waitMs: 5_000 });
      expect(after.fencingToken).toBeGreaterThan(Math.max(next?.fencingToken ?? 0, ...tokens));
      await after.release();

      await closeToolkitApps();
      await settleRejections();
      rejections.stop();
      process.stdout.write(
        `\npartition, node 3 cut off: ${attempts} tryAcquire, ${tokens.length} acquired, ${busy} busy, ` +
          `${unavailable} unavailable; ${summary(durations)}\n`,
      );
      expect(unexpected).toEqual([]);
      expect(maxInside).toBe(1);
      expect(tokens.filter((t, i) => i > 0 && t <= tokens[i - 1])).toEqual([]);
      expect(tokens[0]).toBeGreaterThan(next?.fencingToken ?? Infinity);
      // The majority is reachable: almost every attempt is decided (granted or busy), and locks keep being granted.
      expect(tokens.length + busy + unavailable).toBeGreaterThanOrEqual(attempts);
      expect(unavailable).toBeLessThanOrEqual(Math.floor(attempts * 0.25));
      expect(tokens.length).toBeGreaterThanOrEqual(5);
      expect(overBound(durations)).toEqual([]);
      expect(rejections.reasons).toEqual([]);
    }, 60_000);

    it('rate limit on the cut-off server: failOpen: false refuses, the limit is never exceeded, the count survives the cut', async () => {
      const server = hosts.servers[0];
      const app = await bootToolkitApp({
        target: { url: server.url },
        commandTimeout: COMMAND_TIMEOUT,
        rateLimit: { failOpen: false },
      });
      const rl = app.get(RateLimitService);
      const durations = new Map<string, number[]>();
      const key = `partition-rl-${Date.now()}`;
      const policy = { limit: 5, ttl: 120_000 };
      let allowed = 0;
      for (let i = 0; i < 3; i++) if ((await rl.consume(key, policy)).allowed) allowed++;
      expect(allowed).toBe(3);

      server.partition();
      let refused = 0;
      const unexpected: string[] = [];
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          for (let i = 0; i < 3; i++) {
            try {
              const r = await timed(durations, 'consume (cut off)', () => rl.consume(key, policy));
              if (r.allowed) allowed++;
              unexpected.push(`decided while cut off: ${JSON.stringify(r)}`);
            } catch (err) {
              if (err instanceof RedisUnavailableError) refused++;
              else unexpected.push(String(err));
            }
          }
        }),
      );
      server.heal();
      expect(refused).toBe(12);
      expect(unexpected).toEqual([]);

      // Back: Redis still has the 3 used before the cut, so at most 2 more are admitted. Fewer is possible: the
      // scripts of calls that timed out while cut off sit in the TCP send buffer and may run when the link heals
      // (they were refused to their callers and charge the counter: conservative, never more than the limit).
      expect(
        await waitFor(
          async () => (await rl.consume(`${key}-probe`, policy).catch(() => undefined)) !== undefined,
          15_000,
        ),
      ).toBe(true);
      const results = await Promise.all(Array.from({ length: 10 }, () => rl.consume(key, policy)));
      const afterHeal = results.filter((r) => r.allowed).length;
      allowed += afterHeal;
      process.stdout.write(
        `\npartition, rate limit (failOpen: false): 3 admitted before, ${refused} refused while cut off, ` +
          `${afterHeal} admitted after the heal; ${summary(durations)}\n`,
      );
      expect(afterHeal).toBeLessThanOrEqual(policy.limit - 3);
      expect(results.every((r) => r.degraded === undefined)).toBe(true);
      expect(allowed).toBeLessThanOrEqual(policy.limit);
      expect(overBound(durations)).toEqual([]);
    }, 60_000);

    it('rate limit with the insurance limiter: while cut off it admits at most the limit, each call bounded', async () => {
      const server = hosts.servers[1];
      const app = await bootToolkitApp({
        target: { url: server.url },
        commandTimeout: COMMAND_TIMEOUT,
        rateLimit: { insurance: { divideLimitBy: 1, maxKeys: 1_000 } },
      });
      const rl = app.get(RateLimitService);
      const durations = new Map<string, number[]>();
      const key = `partition-ins-${Date.now()}`;
      const policy = { limit: 5, ttl: 120_000 };
      expect((await rl.consume(`${key}-warm`, policy)).degraded).toBeUndefined();

      server.partition();
      const results = await Promise.all(
        Array.from({ length: 20 }, () => timed(durations, 'consume (cut off)', () => rl.consume(key, policy))),
      );
      server.heal();
      process.stdout.write(`\npartition, rate limit (insurance): ${summary(durations)}\n`);
      expect(results.every((r) => r.degraded === 'insurance')).toBe(true);
      expect(results.filter((r) => r.allowed).length).toBe(policy.limit);
      expect(overBound(durations)).toEqual([]);
    }, 60_000);
  },
);
