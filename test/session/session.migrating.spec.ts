import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { RedisSessionStore } from '../../lib/index.js';
import { recordCommandCalls, recordCommands } from '../support/command-recorder.js';
import { docSnippet } from '../support/doc-snippets.js';
import { trackForCleanup } from '../support/private-servers.js';
import { sharedServers } from '../support/shared-servers.js';

/** The "after" blocks of docs/migrating.md's connect-redis section, run as written (issue 14). */

const AsyncFunction = Object.getPrototypeOf(async () => undefined).constructor as new (
  ...args: string[]
) => (...values: unknown[]) => Promise<unknown>;

/** Runs the block named `name` with RedisSessionStore and `redisClient` in scope and returns `result` from it. */
function run<T>(name: string, redisClient: Redis, result: string): Promise<T> {
  const code = docSnippet('docs/migrating.md', name).replace(/^\/\/ after\n/, '');
  const fn = new AsyncFunction('RedisSessionStore', 'redisClient', `${code}\nreturn ${result};`);
  return fn(RedisSessionStore, redisClient) as Promise<T>;
}

const newId = (): string => randomBytes(24).toString('base64url');

describe('docs/migrating.md: from connect-redis', () => {
  let redisClient: Redis;
  beforeEach(() => {
    redisClient = trackForCleanup(new Redis(sharedServers().single.url));
  });

  it('client, prefix, scanCount', async () => {
    const store = await run<RedisSessionStore>('connect-redis-client', redisClient, 'store');
    const id = newId();
    await store.set(id, { n: 1 } as never);
    expect(await redisClient.exists(`myapp:sess:{${id}}`)).toBe(1);
    const { value, calls } = await recordCommandCalls(redisClient, () => store.ids());
    expect(value).toContain(id);
    const scans = calls.filter((c) => c.name === 'scan');
    expect(scans.length).toBeGreaterThan(0);
    for (const scan of scans) expect(scan.args[scan.args.indexOf('COUNT') + 1]).toBe('100');
    await store.destroy(id);
  });

  it('ttl in milliseconds, and as a function of the session', async () => {
    const { fixed, perSession } = await run<{ fixed: RedisSessionStore; perSession: RedisSessionStore }>(
      'connect-redis-ttl',
      redisClient,
      '{ fixed, perSession }',
    );
    const [a, b, c] = [newId(), newId(), newId()];
    await fixed.set(a, { n: 1 } as never);
    const pttlA = await redisClient.pttl(`rtk:sess:{${a}}`);
    expect(pttlA).toBeGreaterThan(86_000_000);
    expect(pttlA).toBeLessThanOrEqual(86_400_000);
    await perSession.set(b, { remember: true } as never);
    expect(await redisClient.pttl(`rtk:sess:{${b}}`)).toBeGreaterThan(29 * 86_400_000);
    await perSession.set(c, { remember: false } as never);
    const pttlC = await redisClient.pttl(`rtk:sess:{${c}}`);
    expect(pttlC).toBeGreaterThan(3_500_000);
    expect(pttlC).toBeLessThanOrEqual(3_600_000);
    await Promise.all([a, b, c].map((id) => fixed.destroy(id)));
  });

  it('disableTTL and disableTouch', async () => {
    const { forever, untouched } = await run<{ forever: RedisSessionStore; untouched: RedisSessionStore }>(
      'connect-redis-disable',
      redisClient,
      '{ forever, untouched }',
    );
    const [a, b] = [newId(), newId()];
    await forever.set(a, { n: 1 } as never);
    expect(await redisClient.pttl(`rtk:sess:{${a}}`)).toBe(-1);
    await untouched.set(b, { n: 2 } as never);
    const touch = await recordCommands(redisClient, () => untouched.touch(b, { n: 2 } as never));
    expect(touch.commands).toEqual([]);
    expect(await untouched.get(b)).toStrictEqual({ n: 2 });
    await Promise.all([forever.destroy(a), untouched.destroy(b)]);
  });

  it('serializer', async () => {
    const store = await run<RedisSessionStore>('connect-redis-serializer', redisClient, 'store');
    const id = newId();
    await store.set(id, { user: { name: 'ada' }, n: 3 } as never);
    expect(await store.get(id)).toStrictEqual({ user: { name: 'ada' }, n: 3 });
    const stored = JSON.parse((await redisClient.get(`rtk:sess:{${id}}`)) ?? '{}') as { d: Record<string, string> };
    expect(stored.d.user).toBe('{"name":"ada"}');
    await store.destroy(id);
  });
});
