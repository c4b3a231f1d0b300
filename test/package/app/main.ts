// Boots the fixture app on a private redis-server (from the package's own `/testing` subpath) and calls one route
// per feature; prints `ok - ...` / `not ok - ...` lines and exits non-zero on any failure.
import 'reflect-metadata';
import { startRedisServer } from 'nestjs-redis-toolkit/testing';
import { check, runChecks } from './checks.js';
import { AppModule } from './app.module.js';
import { createApp } from './platform.js';

interface Reply {
  status: number;
  headers: Headers;
  body: unknown;
}

async function main(): Promise<void> {
  const redis = await startRedisServer();
  process.env.REDIS_URL = redis.url;
  const app = await createApp(AppModule);
  await app.listen(0, '127.0.0.1');
  const base = (await app.getUrl()).replace('[::1]', '127.0.0.1');
  const call = async (method: string, path: string, cookie?: string): Promise<Reply> => {
    const res = await fetch(`${base}${path}`, { method, headers: cookie ? { cookie } : {} });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
  };
  try {
    const first = await call('GET', '/cache');
    const second = await call('GET', '/cache');
    check(
      'cache: loader called once, value served from Redis',
      JSON.stringify([first.body, second.body]) ===
        JSON.stringify([
          { value: 42, loads: 1 },
          { value: 42, loads: 1 },
        ]),
      [first.body, second.body],
    );

    const limited = [await call('GET', '/limited'), await call('GET', '/limited'), await call('GET', '/limited')];
    const statuses = limited.map((r) => r.status);
    check(
      'rate limit: 200, 200, then 429 with Retry-After',
      statuses.join() === '200,200,429' && limited[2]?.headers.get('retry-after') !== null,
      statuses,
    );

    const login = await call('POST', '/login');
    const cookie = login.headers.get('set-cookie')?.split(';')[0] ?? '';
    const me = await call('GET', '/me', cookie);
    const anonymous = await call('GET', '/me');
    check(
      'session: login cookie reads the session back, no cookie is 401',
      login.status === 200 &&
        me.status === 200 &&
        JSON.stringify(me.body) === JSON.stringify({ userId: 'alice', data: { plan: 'pro' } }) &&
        anonymous.status === 401,
      [login.status, me.body, anonymous.status],
    );

    const locks = [await call('POST', '/lock'), await call('POST', '/lock')];
    const tokens = locks.map((r) => (r.body as { fencingToken?: number } | undefined)?.fencingToken ?? 0);
    check('lock: each acquisition gets a larger fencing token', tokens[0]! > 0 && tokens[1]! > tokens[0]!, tokens);

    const published = await call('POST', '/publish');
    check(
      'pub/sub: a published message reaches the subscriber',
      JSON.stringify(published.body) === JSON.stringify({ received: [{ hello: 'world' }] }),
      published.body,
    );

    const page = await fetch(`${base}/_toolkit`);
    const html = await page.text();
    const script = await fetch(`${base}/_toolkit/dashboard.js`);
    const js = await script.text();
    const snapshot = await fetch(`${base}/_toolkit/snapshot`).then((r) => r.json() as Promise<{ intervalMs: number }>);
    check(
      'dashboard: the page and its script come from the package, the snapshot answers',
      page.status === 200 &&
        html.includes('<script src="_toolkit/dashboard.js">') &&
        script.status === 200 &&
        js.includes('EventSource') &&
        snapshot.intervalMs === 250,
      [page.status, script.status, snapshot],
    );
  } finally {
    await app.close();
    await redis.stop();
  }
}

runChecks(main);
