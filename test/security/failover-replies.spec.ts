/**
 * After a Sentinel failover a client can still be talking to the old master, now a replica, for a moment: every write
 * answers READONLY. The toolkit's scripts decide each item under redis.pcall, so READONLY came back as a per-item
 * error and was treated like WRONGTYPE (a RedisReplyError: HTTP 500, no failure policy). READONLY (like LOADING,
 * MASTERDOWN...) says Redis cannot serve anyone right now: it must follow the feature's failure policy, as the same
 * reply does outside a script — rate limit: fail open when configured (counted) or RedisUnavailableError (503);
 * locks and sessions: RedisUnavailableError. Never a silent allow, never a 500.
 *
 * Each test boots on a server while it is a master, then makes it a replica (REPLICAOF): the old master as a running
 * app sees it during the failover. (The toolkit refuses to start on a replica.) All of this holds within the
 * connection's readOnlyGraceMs (default 30 s) of the first READONLY; past it: readonly-lasting.spec.ts.
 */
import 'reflect-metadata';
import {
  LockService,
  RateLimitService,
  RedisReplyError,
  RedisUnavailableError,
  SessionService,
} from '../../lib/index.js';
import { usePrivateRedis } from '../support/private-servers.js';
import { rawCommand } from '../support/resp.js';
import { closeToolkitApps, createToolkitApp, type ToolkitAppOptions } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

const failure = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => undefined,
    (err: unknown) => err,
  );

describe('READONLY from a demoted master (a failover in progress)', () => {
  // No 5 s wait before each sync (the default delay of a diskless sync): each test demotes the server again.
  const master = usePrivateRedis({ args: ['--repl-diskless-sync-delay', '0'] });
  let replicaPort: number;
  const replica = usePrivateRedis();

  beforeAll(() => {
    replicaPort = replica.server.port;
  });

  /** Boots the app on the server while it is a master, then demotes it, as a failover does under a running app. */
  async function bootThenDemote(options: ToolkitAppOptions = {}) {
    await rawCommand(replicaPort, ['REPLICAOF', 'NO', 'ONE']);
    const app = await createToolkitApp({ target: { url: replica.server.url }, ...options });
    await rawCommand(replicaPort, ['REPLICAOF', '127.0.0.1', String(master.server.port)]);
    const synced = await waitFor(
      async () => String(await rawCommand(replicaPort, ['INFO', 'replication'])).includes('master_link_status:up'),
      10_000,
    );
    expect(synced).toBe(true);
    return app;
  }

  afterEach(closeToolkitApps);

  const policy = { limit: 1, ttl: 60_000 };

  it('rate limit with failOpen: false → RedisUnavailableError, not RedisReplyError', async () => {
    const { get } = await bootThenDemote({ rateLimit: { failOpen: false } });
    const error = await failure(get(RateLimitService).consume('readonly-closed', policy));
    expect(error).toBeInstanceOf(RedisUnavailableError);
    expect(error).not.toBeInstanceOf(RedisReplyError);
    expect((error as Error).message).toMatch(/READONLY/);
  });

  it('rate limit with failOpen: true → allowed as a counted degraded decision (the documented fail-open)', async () => {
    const { get } = await bootThenDemote({ rateLimit: { failOpen: true } });
    const rl = get(RateLimitService);
    const results = await Promise.all([0, 1, 2].map(() => rl.consume('readonly-open', policy)));
    expect(results.map((r) => [r.allowed, Boolean(r.degraded)])).toEqual([
      [true, true],
      [true, true],
      [true, true],
    ]);
    expect(rl.stats().failedOpen).toBe(3);
    expect(rl.stats().replyErrors).toBe(0);
  });

  it('locks: RedisUnavailableError (fail closed as an outage), not a reply error', async () => {
    const { get } = await bootThenDemote();
    const error = await failure(get(LockService).acquire(`readonly-${Date.now()}`, { ttl: 2_000, waitMs: 0 }));
    expect(error).toBeInstanceOf(RedisUnavailableError);
  });

  it('sessions: RedisUnavailableError (503), not a reply error', async () => {
    const { get } = await bootThenDemote();
    const error = await failure(get(SessionService).create('u1', { n: 1 }));
    expect(error).toBeInstanceOf(RedisUnavailableError);
  });
});
