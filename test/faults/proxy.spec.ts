/**
 * The foundation behind a faulty network link (test/support/fault-proxy.ts): delays, a blackhole, connection resets
 * and refused connects. Every Redis call must settle within commandTimeout (never hang), the client must come back
 * once the link does, replies must never be matched to the wrong command afterwards, and nothing may surface as an
 * unhandled rejection.
 */
import 'reflect-metadata';
import { REDIS_CLIENT, RedisToolkitHealth, RedisUnavailableError } from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { usePrivateRedis } from '../support/private-servers.js';
import { closeToolkitApps, createToolkitApp, type ToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';
import { countUnhandledRejections, settleRejections, type RejectionCounter } from '../support/unhandled.js';

const COMMAND_TIMEOUT = 300;
const redis = usePrivateRedis();
let proxy: FaultProxy | undefined;
let rejections: RejectionCounter;

beforeEach(() => {
  rejections = countUnhandledRejections();
});

afterEach(async () => {
  await closeToolkitApps();
  await proxy?.close();
  proxy = undefined;
  await settleRejections();
  rejections.stop();
  expect(rejections.reasons).toEqual([]);
});

async function appThroughProxy(
  extra: Parameters<typeof createToolkitApp>[0] = {},
): Promise<{ app: ToolkitApp; client: RedisClient; proxy: FaultProxy }> {
  proxy = await FaultProxy.start({ port: redis.server.port });
  const app = await createToolkitApp({
    target: { host: '127.0.0.1', port: proxy.port },
    commandTimeout: COMMAND_TIMEOUT,
    maxReconnectDelay: 200,
    ...extra,
  });
  return { app, client: app.get<RedisClient>(REDIS_CLIENT), proxy };
}

/** How a promise settled and how long it took. */
async function timed<T>(work: Promise<T>): Promise<{ ok: boolean; value?: T; error?: unknown; ms: number }> {
  const started = performance.now();
  try {
    const value = await work;
    return { ok: true, value, ms: performance.now() - started };
  } catch (error) {
    return { ok: false, error, ms: performance.now() - started };
  }
}

/** Writes and reads back distinct values: a stream where replies are matched to the wrong commands fails this. */
async function expectInSync(client: RedisClient, tag: string): Promise<void> {
  for (let i = 0; i < 5; i++) {
    const key = `rtk:proof:sync:${tag}:${i}`;
    expect(await client.set(key, `v${i}`)).toBe('OK');
    expect(await client.get(key)).toBe(`v${i}`);
  }
  expect(await client.incrby(`rtk:proof:sync:${tag}:n`, 7)).toBe(7);
}

async function recovered(client: RedisClient, withinMs: number): Promise<boolean> {
  return waitFor(async () => (await client.ping().catch(() => 'down')) === 'PONG', withinMs);
}

describe('the foundation behind a fault proxy', () => {
  it('boots through the proxy and works normally on a clean link', async () => {
    const { app, client, proxy } = await appThroughProxy();
    await expectInSync(client, `clean-${Date.now()}`);
    expect(proxy.stats.accepted).toBeGreaterThanOrEqual(1);
    expect((await app.get(RedisToolkitHealth).check()).status).toBe('up');
  });

  it('a delay below commandTimeout slows commands down; one above it makes them time out, not hang', async () => {
    const { client, proxy } = await appThroughProxy();
    proxy.delay(50);
    const slow = await timed(client.ping());
    expect(slow.ok).toBe(true);
    expect(slow.ms).toBeGreaterThanOrEqual(90); // 50 ms each way
    proxy.delay(COMMAND_TIMEOUT * 2);
    const late = await timed(client.get('rtk:proof:late'));
    expect(late.ok).toBe(false);
    expect(String(late.error)).toMatch(/timed out/i);
    expect(late.ms).toBeLessThan(COMMAND_TIMEOUT * 3);
    await proxy.restore();
    // The late reply does arrive eventually; whatever the client does with it, later commands get their own replies.
    await sleep(COMMAND_TIMEOUT * 2);
    expect(await recovered(client, 3_000)).toBe(true);
    await expectInSync(client, `delay-${Date.now()}`);
  });

  it('a blackholed link makes commands fail within commandTimeout and health say down, without hanging', async () => {
    const { app, client, proxy } = await appThroughProxy();
    const health = app.get(RedisToolkitHealth);
    proxy.blackhole();
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => timed(client.set(`rtk:proof:bh:${i}`, 'x'))),
    );
    for (const r of results) {
      expect(r.ok).toBe(false);
      expect(String(r.error)).toMatch(/timed out|max retries|connection is closed/i);
      expect(r.ms).toBeLessThan(COMMAND_TIMEOUT * 3);
    }
    const down = await timed(health.check());
    expect(down.ok).toBe(true); // never throws
    expect(down.value?.status).toBe('down');
    expect(down.ms).toBeLessThan(COMMAND_TIMEOUT * 3);
  });

  /*
   * Regression test. ioredis keeps a command that hit commandTimeout in its reply queue. When the request bytes were
   * lost (blackhole, half-dead route), the server never answers them, so every later reply would be matched to the
   * command queued before it: commands time out forever, and in a burst a caller receives the reply meant for
   * ANOTHER command (GET a → value of b: a cross-key, cross-user leak). The connection layer now drops a connection
   * whose command timed out (resetOnCommandTimeout in redis-client.factory.ts).
   */
  it("after a blackhole, no command ever gets another command's reply, and the link comes back in sync", async () => {
    const { client, proxy } = await appThroughProxy();
    const tag = `bh-sync-${Date.now()}`;
    await Promise.all(Array.from({ length: 50 }, (_, i) => client.set(`rtk:proof:${tag}:${i}`, `v${i}`)));
    proxy.blackhole();
    await Promise.all(Array.from({ length: 20 }, (_, i) => timed(client.get(`rtk:proof:${tag}:${i}`))));
    await proxy.restore();
    await sleep(COMMAND_TIMEOUT);
    const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => timed(client.get(`rtk:proof:${tag}:${i}`))));
    const wrong = replies.filter((r, i) => r.ok && r.value !== `v${i}`).length;
    expect(wrong).toBe(0);
    expect(await recovered(client, 3_000)).toBe(true);
    await expectInSync(client, tag);
  });

  it('resetting every connection mid-traffic rejects the in-flight commands and reconnects without a crash', async () => {
    const { client, proxy } = await appThroughProxy();
    const traffic = Promise.all(
      Array.from({ length: 200 }, (_, i) => timed(client.set(`rtk:proof:rst:${i}`, String(i)))),
    );
    await sleep(5);
    proxy.resetAll();
    const results = await traffic;
    for (const r of results) expect(r.ms).toBeLessThan(COMMAND_TIMEOUT * 3);
    expect(proxy.stats.resets).toBeGreaterThanOrEqual(1);
    expect(await recovered(client, 3_000)).toBe(true);
    await expectInSync(client, `reset-${Date.now()}`);
    // Twice more in a row: no growing pile of listeners or sockets.
    for (let i = 0; i < 2; i++) {
      proxy.resetAll();
      expect(await recovered(client, 3_000)).toBe(true);
    }
    expect(proxy.stats.open).toBeLessThanOrEqual(1);
  });

  it('refused connects fail fast; restore reconnects within the reconnect backoff', async () => {
    const { client, proxy } = await appThroughProxy();
    await proxy.refuse();
    const failed = await timed(client.get('rtk:proof:refused'));
    expect(failed.ok).toBe(false);
    expect(failed.ms).toBeLessThan(COMMAND_TIMEOUT * 3);
    await sleep(500);
    await proxy.restore();
    const started = Date.now();
    expect(await recovered(client, 3_000)).toBe(true);
    // maxReconnectDelay is 200 ms (+20 % jitter) here; allow scheduling slack on a busy machine.
    expect(Date.now() - started).toBeLessThan(1_500);
    await expectInSync(client, `refuse-${Date.now()}`);
  });

  it('bootstrap through a blackholed link fails with RedisUnavailableError naming the address, within its budget', async () => {
    proxy = await FaultProxy.start({ port: redis.server.port });
    proxy.blackhole();
    const started = Date.now();
    const error = await createToolkitApp({
      target: { host: '127.0.0.1', port: proxy.port },
      connectTimeout: 400,
      commandTimeout: COMMAND_TIMEOUT,
    }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(RedisUnavailableError);
    expect((error as Error).message).toContain(`redis://127.0.0.1:${proxy.port}`);
    expect(Date.now() - started).toBeLessThan(400 + COMMAND_TIMEOUT + 1_000);
  });
});
