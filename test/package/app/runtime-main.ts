// Boots the runtime fixture (runtime.module.ts) on a private redis-server and checks each route's answers; prints
// `ok - ...` / `not ok - ...` lines as main.ts does and exits non-zero on any failure. Run by run.mjs under
// RTK_PACKAGE_RUNTIME (Bun, Deno), after main.ts (the same app every package check runs). Then the cluster part
// (runtime-cluster.ts): the features again on a 3-master Redis Cluster.
import 'reflect-metadata';
import { startRedisServer } from 'nestjs-redis-toolkit/testing';
import { check, runChecks } from './checks.js';
import { createApp, platform } from './platform.js';
import { clusterChecks } from './runtime-cluster.js';
import { RuntimeModule } from './runtime.module.js';

async function main(): Promise<void> {
  const redis = await startRedisServer();
  process.env.REDIS_URL = redis.url;
  const app = await createApp(RuntimeModule);
  await app.listen(0, '127.0.0.1');
  const base = (await app.getUrl()).replace('[::1]', '127.0.0.1');
  const call = async (path: string, method = 'GET') => {
    const res = await fetch(`${base}${path}`, { method });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {}
    return { status: res.status, headers: res.headers, body };
  };
  try {
    const pages = [await call('/page'), await call('/page')];
    const seen = pages.map((p) => [p.headers.get('x-cache'), (p.body as { renders?: number }).renders]);
    check('URL cache: MISS then HIT, the handler ran once', JSON.stringify(seen) === '[["MISS",1],["HIT",1]]', seen);

    const l1 = (await call('/l1')).body as Record<string, unknown>;
    check(
      'cache L1 (CLIENT TRACKING): served from L1 with no Redis read, dropped when another client deletes the key',
      l1.fromL1 === true && l1.trackingConnection === true && l1.droppedAfterOtherClientsWrite === true,
      l1,
    );

    const limited = [await call('/limited'), await call('/limited'), await call('/limited')];
    const headers = limited.map((r) => [r.status, r.headers.get('ratelimit'), r.headers.get('ratelimit-policy')]);
    check(
      'rate limit headers: RateLimit r=1, r=0, then 429 with Retry-After',
      limited.map((r) => r.status).join() === '200,200,429' &&
        /r=1\b/.test(String(headers[0]?.[1])) &&
        /r=0\b/.test(String(headers[1]?.[1])) &&
        /q=2\b/.test(String(headers[0]?.[2])) &&
        limited[2]?.headers.get('retry-after') !== null,
      headers,
    );

    const attempts: number[] = [];
    for (const ok of ['1', '1', '1', '0', '0', '0', '1']) attempts.push((await call(`/attempt?ok=${ok}`)).status);
    check(
      'skipSuccessfulRequests: 3 successes refunded, then 401, 401, 429 (2 failures fill the limit)',
      attempts.join() === '200,200,200,401,401,429,429',
      attempts,
    );

    const fragile: number[] = [];
    for (const ok of ['0', '0', '0', '1', '1']) fragile.push((await call(`/fragile?ok=${ok}`)).status);
    check(
      'skipFailedRequests: 3 failures refunded, then 200, 429 (a limit of 1)',
      fragile.join() === '401,401,401,200,429',
      fragile,
    );

    const aborted = await abortedRequestRefunded(base, call);
    check(
      "skipFailedRequests: a client that aborts is refunded ('close' before 'finish'): the next request is admitted",
      aborted.entered && aborted.admittedAfter,
      aborted,
    );

    const lock = (await call('/long-lock', 'POST')).body as Record<string, unknown>;
    check(
      'lock: held 2.4x its ttl (auto-extended), LockService.current() after each await, released after',
      typeof lock.token === 'number' &&
        lock.currentEveryTime === true &&
        lock.reacquired === true &&
        JSON.stringify(lock.keysLeft) === '[]',
      lock,
    );

    const diagnostics = (await call('/diagnostics')).body as Record<string, unknown>;
    check(
      'diagnostics_channel: rtk:cache:get publishes a miss then a hit',
      JSON.stringify(diagnostics.events) === '["get:miss","get:hit"]',
      diagnostics,
    );
    check(
      'TracingChannel: start/asyncEnd around each getOrSet, the loader runs in the store bound to start',
      JSON.stringify(diagnostics.traces) === '["start","asyncEnd","start","asyncEnd"]' &&
        diagnostics.loaderSaw === 'span-of-this-get',
      diagnostics,
    );

    redis.pause(); // SIGSTOP: the port accepts connections, nothing is answered
    const outage = (await call('/outage')).body;
    redis.resume();
    check(
      'Redis paused: cache serves the loader, rate limit fails open, session and lock fail with RedisUnavailableError',
      JSON.stringify(outage) ===
        JSON.stringify({
          cache: { value: 'from-loader', degraded: 'fail-open' },
          rateLimit: { allowed: true, degraded: 'fail-open' },
          session: 'RedisUnavailableError',
          lock: 'RedisUnavailableError',
        }),
      outage,
    );

    await redis.kill();
    await redis.restart();
    let recovered: unknown;
    for (let i = 0; i < 200; i++) {
      recovered = (await call('/recovered')).body;
      if (JSON.stringify(recovered) === '{"degraded":null,"stored":true}') break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    check(
      'Redis killed and restarted: the connections come back, the cache stores again',
      JSON.stringify(recovered) === '{"degraded":null,"stored":true}',
      recovered,
    );
  } finally {
    await app.close();
    await redis.stop();
  }
  await clusterChecks(check, platform).catch((err: unknown) =>
    check('cluster (3 masters): the part ran to the end', false, err instanceof Error ? err.stack : String(err)),
  );
}

/**
 * GET /abortable?wait=1 on a limit of 1 with skipFailedRequests: the client aborts while the handler waits, so the
 * response closes before it finishes and the charge is a failure's, refunded. The next request must be admitted:
 * tried until it is (a refused try charges nothing), at most 250 times, 20 ms apart.
 */
async function abortedRequestRefunded(
  base: string,
  call: (path: string) => Promise<{ status: number; body: unknown }>,
): Promise<{ entered: boolean; admittedAfter: boolean; statuses: number[] }> {
  const abort = new AbortController();
  const pending = fetch(`${base}/abortable?wait=1`, { signal: abort.signal }).catch(() => undefined);
  let entered = false;
  for (let i = 0; i < 100 && !entered; i++) {
    entered = ((await call('/abortable-entered')).body as { entered: boolean }).entered;
    if (!entered) await new Promise((resolve) => setTimeout(resolve, 20));
  }
  abort.abort();
  await pending;
  const statuses: number[] = [];
  for (let i = 0; i < 250 && statuses.at(-1) !== 200; i++) {
    statuses.push((await call('/abortable')).status);
    if (statuses.at(-1) !== 200) await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { entered, admittedAfter: statuses.at(-1) === 200, statuses };
}

runChecks(main);
