/**
 * An app booted on a client the user gave (`connection: { client }`) leaves the client as it found it at app.close():
 * the client is the user's and outlives the app (the toolkit does not quit it), so a listener the toolkit left on it
 * would keep the closed app's objects alive, and an app per test on one shared client would pass Node's
 * getMaxListeners() (10) at the 11th (MaxListenersExceededWarning).
 */
import 'reflect-metadata';
import { Redis } from 'ioredis';
import type { ToolkitAppOptions } from '../support/toolkit-app.js';
import { trackForCleanup } from '../support/private-servers.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';

afterEach(closeToolkitApps);

const APPS = 12;

/** The client's listener count per event, for every event that has one. */
function listenerCounts(client: Redis): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const event of client.eventNames()) counts[String(event)] = client.listenerCount(event);
  return counts;
}

/** The default features, and every feature that listens on the main client (sessions' clock, the L1 cache's tracking). */
const FEATURES: [string, Omit<ToolkitAppOptions, 'target'>][] = [
  ['default features', {}],
  [
    'sessions and the L1 cache too',
    { session: { ttl: 60_000, cookie: { secret: 's3cret' } }, cache: { l1: { max: 100, ttl: 1_000 } } },
  ],
];

describe.each(FEATURES)("an app on the user's client ({ client }), %s", (_, features) => {
  it(`${APPS} apps booted and closed one after another leave every event's listener count as it was`, async () => {
    const client = trackForCleanup(new Redis(sharedServers().single.port, '127.0.0.1', { commandTimeout: 1_000 }));
    await client.ping();
    const before = listenerCounts(client);
    // What a booted app adds (the READONLY streak's 'ready' among them): proof the count below is not trivially equal.
    const booted: Record<string, number>[] = [];
    for (let i = 0; i < APPS; i++) {
      const app = await bootToolkitApp({ ...features, target: { client }, keyPrefix: `rtk-listeners-${i}:` });
      booted.push(listenerCounts(client));
      await app.close();
      expect(listenerCounts(client)).toEqual(before);
    }
    expect(booted[0].ready ?? 0).toBeGreaterThan(before.ready ?? 0);
    // Nor do they pile up while an app is open: each had the same.
    for (const counts of booted) expect(counts).toEqual(booted[0]);
    expect(client.status).toBe('ready');
    expect(await client.ping()).toBe('PONG');
  });
});
