/**
 * The sample under HTTP load with a Redis ACL user (issue 17): a permission removed at run time (`ACL SETUSER app
 * -time`, which the rate-limit script needs) gives typed errors on what needs it — never a fail-open 200 nor an
 * "unavailable" 503 — while what does not need it keeps working; a user missing the permission at start makes the
 * app refuse to boot, naming the command and the rule. test/security/acl.spec.ts covers the same per feature
 * in-process; this runs the built sample as a process, under load.
 */
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { runLoad } from './harness/load.js';
import { startSampleApp, type SampleApp } from './harness/sample-app.js';

const PASSWORD = `acl-faults-${Math.random().toString(36).slice(2)}`;

/** The documented `ACL SETUSER app ...` rules (docs/security.md), with our password. */
function documentedRules(): string[] {
  const doc = readFileSync(new URL('../../docs/security.md', import.meta.url), 'utf8');
  const line = doc.split('\n').find((l) => l.startsWith('ACL SETUSER app '));
  if (!line) throw new Error('docs/security.md has no ACL SETUSER app line');
  return line
    .trim()
    .split(/\s+/)
    .slice(3)
    .map((w) => (w === '>long-random-password' ? `>${PASSWORD}` : w));
}

let server: RedisServerHandle;
let admin: Redis;
const apps: SampleApp[] = [];

beforeAll(async () => {
  server = trackForCleanup(await startRedisServer({ aclUser: { name: 'app', password: PASSWORD } }));
  admin = trackForCleanup(new Redis(server.port, '127.0.0.1'));
});
afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.stop()));
});

function start(bootTimeoutMs?: number): Promise<SampleApp> {
  return startSampleApp({
    redisUrl: server.url,
    commandTimeout: 1_000,
    // The documented line grants keys and channels under `rtk:`.
    env: { REDIS_KEY_PREFIX: 'rtk:' },
    ...(bootTimeoutMs !== undefined && { bootTimeoutMs }),
  }).then((app) => {
    apps.push(app);
    return app;
  });
}

it('a user without +time: the sample refuses to start, naming TIME, the script and the rule', async () => {
  await admin.call('acl', 'setuser', 'app', 'reset', ...documentedRules().filter((w) => w !== '+time'));
  const err = await start(60_000).then(
    () => undefined,
    (e: unknown) => e as Error,
  );
  expect(err).toBeInstanceOf(Error);
  expect(err?.message).toMatch(/exited during boot/);
  expect(err?.message).toMatch(/RedisPermissionError|E_REDIS_PERMISSION|may not run commands/);
  expect(err?.message).toMatch(/TIME \(in consume[a-z-]*\.lua\)/);
  expect(err?.message).toMatch(/\+time/);
  expect(err?.message).not.toContain(PASSWORD);
});

it('+time removed at run time under load: rate-limited requests fail with a typed error, never 200 nor 503', async () => {
  await admin.call('acl', 'setuser', 'app', 'reset', ...documentedRules());
  const app = await start();
  const loadStart = performance.now();
  let removedAt = Number.POSITIVE_INFINITY;
  const [products, health] = await runLoad(
    app.baseUrl,
    [
      { name: 'products', path: '/products' },
      { name: 'health', path: '/health' },
    ],
    { durationMs: 4_000, concurrency: 2, timeoutMs: 10_000 },
    [
      {
        atMs: 1_000,
        run: async () => {
          await admin.call('acl', 'setuser', 'app', '-time');
          removedAt = performance.now() - loadStart;
        },
      },
    ],
  );
  expect(Number.isFinite(removedAt)).toBe(true);
  // Answered before the removal began (a request started just before it may reach Redis after it).
  const before = products.samples.filter((s) => s.at + s.latencyMs < 1_000);
  const after = products.samples.filter((s) => s.at > removedAt);
  // The baseline: the endpoint answered normally with the documented line.
  expect(before.length).toBeGreaterThan(0);
  expect(before.every((s) => s.status === 200 || s.status === 429)).toBe(true);
  // After: every request got an answer, and none was let through (200) or called an outage (503).
  expect(after.length).toBeGreaterThan(10);
  const statuses = [...new Set(after.map((s) => s.status))].sort();
  expect(statuses).toEqual([500]);
  // Redis is up and says so: health does not need TIME.
  const healthAfter = health.samples.filter((s) => s.at > removedAt);
  expect(healthAfter.length).toBeGreaterThan(0);
  expect(healthAfter.every((s) => s.status === 200 && s.bodyStatus === 'up')).toBe(true);
  // Logged as a permission error (counted by the failure policy), never as Redis being unavailable.
  expect(app.output()).toMatch(/NOPERM|permission/i);
  expect(app.output()).not.toMatch(/E_REDIS_UNAVAILABLE|Redis unavailable/i);
  expect(app.troubles()).toEqual([]);
});
