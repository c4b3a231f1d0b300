import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { exportNames } from '../support/export-names.js';

/**
 * The root entry point's names, exactly: a change to the public surface shows up here as a diff. What an application
 * imports lives at the root; plumbing is on `nestjs-redis-toolkit/advanced` (README "Entry points").
 */
const lib = (path: string): string => fileURLToPath(new URL(`../../lib/${path}`, import.meta.url));

const ROOT_VALUES = [
  'CacheEvict',
  'CacheLoadTimeoutError',
  'CachePut',
  'CacheService',
  'Cacheable',
  'CurrentSession',
  'InvalidKeyError',
  'InvalidOptionsError',
  'Lock',
  'LockHoldTimeoutError',
  'LockLostError',
  'LockNotAcquiredError',
  'LockService',
  'MultiLock',
  'PubSubService',
  'REDIS_CLIENT',
  'RateLimitExceededError',
  'RateLimitGuard',
  'RateLimitService',
  'RedisPermissionError',
  'RedisReplyError',
  'RedisSessionStore',
  'RedisToolkitError',
  'RedisToolkitHealth',
  'RedisToolkitModule',
  'RedisUnavailableError',
  'Semaphore',
  'SerializationError',
  'SessionGuard',
  'SessionMiddleware',
  'SessionNotFoundError',
  'SessionService',
  'SessionTooLargeError',
  'SkipThrottle',
  'Throttle',
  'UnsupportedContextError',
  'WithLock',
];
const ROOT_TYPES = [
  'CacheOptions',
  'CacheResult',
  'CacheStats',
  'CookieResponse',
  'LockEventInfo',
  'LockOptions',
  'PubSubOptions',
  'RateLimitDecision',
  'RateLimitOptions',
  'RateLimitPolicy',
  'RateLimitResult',
  'RateLimitStats',
  'RedisToolkitHealthResult',
  'RedisToolkitOptions',
  'Serializer',
  'Session',
  'SessionData',
  'SessionOptions',
  'SessionRequest',
  'ThrottleOptions',
  'Unsubscribe',
];

describe('public API', () => {
  // 58 since 2026-12-06 (50 before): the types root services' methods return joined, so that an app built with
  // `declaration: true` can name what its handlers return (test/package/app/results.ts).
  it('the root exports exactly these names (at most 58)', async () => {
    const root = exportNames(lib('index.ts'));
    expect(root.values).toEqual(ROOT_VALUES);
    expect(root.types).toEqual(ROOT_TYPES);
    expect(root.values.length + root.types.length).toBeLessThanOrEqual(58);
    // The parser above agrees with what the module really exports at run time.
    expect(Object.keys(await import('../../lib/index.js')).sort()).toEqual(ROOT_VALUES);
  });

  it('the root exposes no internals', () => {
    const root = exportNames(lib('index.ts'));
    const all = [...root.values, ...root.types];
    const internal = all.filter((n) =>
      /^Resolved|_OPTIONS$|METADATA|CHANNEL|^RedisConnection$|^KeyBuilder$|ClientAddress|CookieValue|SessionId/.test(n),
    );
    expect(internal).toEqual([]);
  });

  it('every name the root had before is still importable from the root or a documented subpath', async () => {
    const advanced = exportNames(lib('advanced.ts'));
    const notifications = exportNames(lib('notifications/index.ts'));
    const root = exportNames(lib('index.ts'));
    const reachable = new Set([root, advanced, notifications].flatMap((e) => [...e.values, ...e.types]));
    // The root's names before the split (2026-11-30), less metadata keys and constants nobody imported.
    const removed = ['THROTTLE_METADATA', 'SKIP_THROTTLE_METADATA', 'SESSION_UNAVAILABLE_MESSAGE', 'ResolvedPolicy'];
    const before = readFileSync(fileURLToPath(new URL('./public-api.before.txt', import.meta.url)), 'utf8')
      .split('\n')
      .filter((n) => n !== '' && !removed.includes(n));
    expect(before).toHaveLength(120 - removed.length);
    expect(before.filter((n) => !reachable.has(n))).toEqual([]);
    expect(Object.keys(await import('../../lib/advanced.js')).sort()).toEqual(advanced.values);
    const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8'));
    expect(Object.keys(pkg.exports)).toEqual(
      expect.arrayContaining(['.', './advanced', './notifications', './otel', './terminus']),
    );
  });

  it('nestjs-redis-toolkit/dashboard exports exactly these names', async () => {
    const dashboard = exportNames(lib('dashboard/index.ts'));
    expect(dashboard.values).toEqual(['DashboardService', 'DashboardUnguardedError', 'RedisToolkitDashboardModule']);
    expect(dashboard.types).toEqual([
      'DashboardEvent',
      'DashboardFrame',
      'DashboardSnapshot',
      'RedisSample',
      'RedisToolkitDashboardOptions',
    ]);
    expect(Object.keys(await import('../../lib/dashboard/index.js')).sort()).toEqual(dashboard.values);
    const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8'));
    expect(pkg.exports['./dashboard']).toEqual({
      types: './dist/lib/dashboard/index.d.ts',
      default: './dist/lib/dashboard/index.js',
    });
  });
});
