/**
 * `touchAfter` with the wall clock stepping (NTP, a VM resumed, an operator): a touch is reused for its time on the
 * monotonic clock, whatever Date.now() says. Before, RecentTouches.expiryOf measured the touch's age as
 * `Date.now() - at`, which came out negative after a step back and passed both bounds, so no read extended the session
 * until the clock had caught up (test/foundation/busy-machine.hostile.spec.ts has the SessionService case).
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { SessionData } from 'express-session';
import { Redis } from 'ioredis';
import { RedisSessionStore } from '../../lib/index.js';
import { generateSessionId } from '../../lib/advanced.js';
import { RecentTouches } from '../../lib/session/session.recent-touches.js';
import { restoreClocks, shiftDateNow, useClockShift } from '../support/clock-shift.js';
import { recordCommands } from '../support/command-recorder.js';
import { trackForCleanup } from '../support/private-servers.js';
import { sharedServers } from '../support/shared-servers.js';
import { sleep } from '../support/wait.js';

const HOUR = 3_600_000;
const TOUCHING = ['getex', 'evalsha', 'eval', 'pexpireat'];
useClockShift();

describe('RecentTouches with the wall clock stepping', () => {
  const reuse = { ms: 200, shareOfTtl: 0.5 };
  const ttl = 60_000;

  it('after a step back, a touch is reused for reuse.ms of real time, then the next read touches', async () => {
    const touches = new RecentTouches(reuse);
    const at = Date.now();
    touches.set('s', ttl, at, at + ttl);
    shiftDateNow(-HOUR);
    expect(touches.expiryOf('s', ttl, Date.now())).toBe(at + ttl);
    await sleep(300);
    // before: the same expiry (age -1 h: under both bounds), for the hour until the clock caught up
    expect(touches.expiryOf('s', ttl, Date.now())).toBeUndefined();
  });

  it('a step back during the touching read: its age counts from when the read ended, so it still ends', async () => {
    const touches = new RecentTouches(reuse);
    const at = Date.now(); // the read began
    shiftDateNow(-HOUR); // and the clock stepped back before its reply
    touches.set('s', ttl, at, at + ttl);
    expect(touches.expiryOf('s', ttl, Date.now())).toBe(at + ttl);
    await sleep(300);
    expect(touches.expiryOf('s', ttl, Date.now())).toBeUndefined();
  });

  it('a step forward: a touch is still reused within reuse.ms; one made across a step forward is old at once', () => {
    const touches = new RecentTouches(reuse);
    const at = Date.now();
    touches.set('s', ttl, at, at + ttl);
    shiftDateNow(HOUR);
    // before: undefined (age 1 h): an extra touch, not a lost one
    expect(touches.expiryOf('s', ttl, Date.now())).toBe(at + ttl);
    // the read began before the step and ended after it: its age cannot be told, so it is taken as old
    touches.set('t', ttl, at, at + ttl);
    expect(touches.expiryOf('t', ttl, Date.now())).toBeUndefined();
  });
});

describe('RedisSessionStore touchAfter after the app clock steps back an hour', () => {
  it('a session read every 250 ms stays alive, each get past touchAfter extending it', async () => {
    const client = trackForCleanup(new Redis(sharedServers().single.url));
    const prefix = `rtk-tac-${randomBytes(4).toString('hex')}:`;
    const store = new RedisSessionStore({ client, prefix, touchAfter: 300 });
    const sid = generateSessionId();
    const maxAge = 1_500;
    const cookie = { originalMaxAge: maxAge, expires: new Date(Date.now() + maxAge), httpOnly: true, path: '/' };
    await store.set(sid, { cookie, views: 1 } as unknown as SessionData);
    // the first get learns the session's own ttl (the store's guess is 24 h), the second touches with it
    for (let i = 0; i < 2; i++) expect(await store.get(sid)).not.toBeNull();
    shiftDateNow(-HOUR);
    const reads: boolean[] = [];
    const run = await recordCommands(client, async () => {
      for (let i = 0; i < 12; i++) {
        await sleep(250);
        reads.push((await store.get(sid)) !== null);
      }
    });
    restoreClocks();
    // before: true for ~1.5 s, then false; no get after the step extended the session
    expect(reads).toEqual(reads.map(() => true));
    // 12 gets 250 ms apart, a touch reused for 300 ms: at least every other get touches
    expect(run.commands.filter((c) => TOUCHING.includes(c)).length).toBeGreaterThanOrEqual(6);
  });
});
