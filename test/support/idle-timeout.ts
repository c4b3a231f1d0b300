/**
 * The specs of a Redis whose redis.conf `timeout 1` closes idle clients (operator-settings.hostile.spec.ts on one
 * server, idle-keepalive.hostile.spec.ts on a cluster and a user's client): idle rounds of calls that must all succeed.
 */
import {
  CacheService,
  LockService,
  PubSubService,
  RateLimitService,
  RedisToolkitHealth,
  SessionService,
} from '../../lib/index.js';
import type { ToolkitApp } from './toolkit-app.js';
import { sleep } from './wait.js';

/** Longer than `timeout 1` lets a connection be idle (Redis closes it after 1 to 2 s). */
export const IDLE_MS = 2_500;

/** A call's value as `{ value }`, or the error it rejected with. */
export const outcome = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    (value) => ({ value }),
    (err: unknown) => err,
  );

/** A call of a round: its name, the call, and the value it must give (compared as JSON). */
export type IdleCall = [name: string, call: Promise<unknown>, expected: unknown];

/**
 * Three rounds of: idle for IDLE_MS, then the calls `calls(round)` makes, all at once. Returns the failed calls by
 * round and name: an error, or a value other than the expected one.
 */
export async function idleRounds(calls: (round: number) => IdleCall[]): Promise<string[]> {
  const failures: string[] = [];
  for (let round = 0; round < 3; round++) {
    await sleep(IDLE_MS);
    const made = calls(round);
    const results = await Promise.all(made.map(([, call]) => outcome(call)));
    results.forEach((r, i) => {
      const [name, , expected] = made[i];
      if (r instanceof Error) failures.push(`round ${round} ${name}: ${r.message}`);
      else if (JSON.stringify((r as { value: unknown }).value) !== JSON.stringify(expected))
        failures.push(`round ${round} ${name}: got ${JSON.stringify((r as { value: unknown }).value)}`);
    });
  }
  return failures;
}

/** The services a round calls, of `app`. */
export function roundServices(app: ToolkitApp) {
  return {
    cache: app.get(CacheService),
    limits: app.get(RateLimitService),
    sessions: app.get(SessionService),
    locks: app.get(LockService),
    pubsub: app.get(PubSubService),
    health: app.get(RedisToolkitHealth),
  };
}
