import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { Cluster, Redis } from 'ioredis';
import { InvalidOptionsError, RedisSessionStore } from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { recordCommandCalls, recordCommands } from '../support/command-recorder.js';
import { trackForCleanup } from '../support/private-servers.js';
import { sharedServers } from '../support/shared-servers.js';

/** connect-redis options on RedisSessionStore: they behave as connect-redis documents them (issue 14). */

/**
 * A connected client: a store made on a client still connecting reads the server's limits and clock at its 'ready'
 * (TIME, and an ACL check of CONFIG GET through acl-check.lua per master), which could land inside a command recording.
 */
async function clientFor(target: 'single' | 'cluster'): Promise<RedisClient> {
  const client = trackForCleanup(
    target === 'single'
      ? new Redis(sharedServers().single.url)
      : new Cluster(sharedServers().cluster, { redisOptions: { maxRetriesPerRequest: 0 } }),
  );
  if (client.status !== 'ready') await new Promise((resolve) => client.once('ready', resolve));
  return client;
}

const newId = (): string => randomBytes(24).toString('base64url');
const prefix = (): string => `rtk-cr-${randomBytes(4).toString('hex')}:`;
const cookieFor = (maxAge: number) => ({ originalMaxAge: maxAge, expires: new Date(Date.now() + maxAge), path: '/' });
/** Every command that can set or change a key's expiry. */
const EXPIRING = ['getex', 'expire', 'pexpire', 'expireat', 'pexpireat', 'evalsha', 'eval', 'set', 'persist'];

describe.each(['single', 'cluster'] as const)('RedisSessionStore connect-redis options on %s', (target) => {
  it('disableTouch: touch sends nothing, get is a plain read; the ttl is the one set wrote', async () => {
    const client = await clientFor(target);
    const p = prefix();
    const store = new RedisSessionStore({ client, prefix: p, disableTouch: true });
    const id = newId();
    await store.set(id, { cookie: cookieFor(60_000), n: 1 } as never);
    const read = await recordCommands(client, () => store.get(id));
    expect(read.value).toMatchObject({ n: 1 });
    expect(read.commands.filter((c) => EXPIRING.includes(c))).toEqual([]);
    const touched = await recordCommands(client, () => store.touch(id, { cookie: cookieFor(3_600_000) } as never));
    expect(touched.commands).toEqual([]);
    expect(await client.pttl(`${p}sess:{${id}}`)).toBeLessThanOrEqual(60_000);
  });

  it('disableTTL: the key has no expiry, touch does not give it one', async () => {
    const client = await clientFor(target);
    const p = prefix();
    const store = new RedisSessionStore({ client, prefix: p, disableTTL: true });
    const id = newId();
    await store.set(id, { cookie: cookieFor(60_000), n: 1 } as never);
    expect(await client.pttl(`${p}sess:{${id}}`)).toBe(-1);
    expect(await store.get(id)).toMatchObject({ n: 1 });
    const touched = await recordCommands(client, () => store.touch(id, { cookie: cookieFor(60_000) } as never));
    expect(touched.commands).toEqual([]);
    expect(await client.pttl(`${p}sess:{${id}}`)).toBe(-1);
    // an expired cookie is still expired (connect-redis destroys it too)
    await store.set(id, { cookie: { expires: new Date(Date.now() - 1_000) }, n: 2 } as never);
    expect(await store.get(id)).toBeNull();
    await store.clear();
  });

  it('ttl as a function of the session is honoured (ms), over the cookie; a result <= 0 means expired', async () => {
    const client = await clientFor(target);
    const p = prefix();
    const seen: unknown[] = [];
    const store = new RedisSessionStore({
      client,
      prefix: p,
      ttl: (session) => {
        seen.push(session);
        return (session as unknown as { n: number }).n * 100_000;
      },
    });
    const [a, b, c] = [newId(), newId(), newId()];
    await store.set(a, { cookie: cookieFor(60_000), n: 1 } as never);
    await store.set(b, { cookie: cookieFor(60_000), n: 30 } as never);
    await store.set(c, { cookie: cookieFor(60_000), n: 0 } as never);
    const pttlA = await client.pttl(`${p}sess:{${a}}`);
    expect(pttlA).toBeGreaterThan(90_000);
    expect(pttlA).toBeLessThanOrEqual(100_000);
    const pttlB = await client.pttl(`${p}sess:{${b}}`);
    expect(pttlB).toBeGreaterThan(2_900_000);
    expect(pttlB).toBeLessThanOrEqual(3_000_000);
    expect(await client.exists(`${p}sess:{${c}}`)).toBe(0);
    expect(seen).toHaveLength(3);
    // touch asks the function too: n 50 → 5,000 s
    await store.touch(a, { cookie: cookieFor(60_000), n: 50 } as never);
    expect(await client.pttl(`${p}sess:{${a}}`)).toBeGreaterThan(4_900_000);
    await store.clear();
  });

  it('scanCount is the COUNT of every SCAN of all, ids, length and clear', async () => {
    const client = await clientFor(target);
    const store = new RedisSessionStore({ client, prefix: prefix(), scanCount: 7 });
    const ids = Array.from({ length: 20 }, newId);
    await Promise.all(ids.map((id, i) => store.set(id, { n: i, userId: `u${i % 2}` } as never)));
    for (const run of [() => store.all(), () => store.ids(), () => store.length(), () => store.clear()]) {
      const { calls } = await recordCommandCalls(client, run as () => Promise<unknown>);
      const scans = calls.filter((c) => c.name === 'scan');
      expect(scans.length).toBeGreaterThan(0);
      for (const scan of scans) expect(scan.args[scan.args.indexOf('COUNT') + 1]).toBe('7');
    }
    expect(await store.length()).toBe(0);
  });
});

describe('RedisSessionStore options', () => {
  const client = (): RedisClient => trackForCleanup(new Redis(sharedServers().single.url, { lazyConnect: true }));

  it('an unknown option is an InvalidOptionsError naming it and the nearest known name', () => {
    const make = (options: object) => () => new RedisSessionStore({ client: client(), ...options } as never);
    expect(make({ disableTouh: true })).toThrow(InvalidOptionsError);
    expect(make({ disableTouh: true })).toThrow(
      /Invalid RedisSessionStore options:\n {2}- disableTouh is not a known option \(did you mean disableTouch\?\)/,
    );
    expect(make({ scancount: 10 })).toThrow(/scancount is not a known option \(did you mean scanCount\?\)/);
    expect(make({ ttl: 60_000, disableTouch: true, disableTTL: false, scanCount: 10 })).not.toThrow();
  });

  it('a connect-redis serializer ({ stringify, parse }) is refused, saying ours is { serialize, deserialize }', () => {
    expect(() => new RedisSessionStore({ client: client(), serializer: JSON } as never)).toThrow(
      /RedisSessionStore serializer must be \{ serialize, deserialize \}/,
    );
  });

  it('a ttl below 1,000 warns at startup that it is milliseconds here, seconds in connect-redis', () => {
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    try {
      new RedisSessionStore({ client: client(), ttl: 86_400 });
      expect(warn).toHaveBeenCalledTimes(0);
      new RedisSessionStore({ client: client(), ttl: 600 });
      expect(warn).toHaveBeenCalledTimes(1);
      expect(warn.mock.calls[0][0]).toBe(
        'RedisSessionStore ttl is 600 ms: it is milliseconds here, seconds in connect-redis (for 600 seconds write ttl: 600000)',
      );
    } finally {
      warn.mockRestore();
    }
  });
});
