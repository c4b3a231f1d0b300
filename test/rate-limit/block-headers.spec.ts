import 'reflect-metadata';
import { Controller, Post, UseGuards } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import request, { type Response } from 'supertest';
import {
  RateLimitExceededError,
  RateLimitGuard,
  RateLimitService,
  Throttle,
  type RateLimitOptions,
  type RateLimitPolicy,
  type RateLimitResult,
} from '../../lib/index.js';
import type { RateLimitAlgorithm } from '../../lib/advanced.js';
import { bootHeaderApps, type HeaderApp, userFromHeader } from '../support/rate-limit-http.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS_AND_TARGETS } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

// While a counter is blocked (blockDuration, block(key, ms)), what a client reads as "when can I try again" agrees:
// the quota is back only when the block ends, so every reset (X-RateLimit-Reset, draft-6 RateLimit-Reset, draft-7
// reset=, draft-8 t=) and resetMs are at least Retry-After / retryAfterMs, and remaining is 0. Before 2026-12-03 the
// reset was the counter's own (the 60 s window of docs/migrating.md's login policy blocked for 300 s answered
// X-RateLimit-Reset: 60 with Retry-After: 300; a block by hand on an unused counter answered reset 0).

afterAll(closeToolkitApps);

const TTL = 1_000;
const BLOCK = 3_500;
const HAND_BLOCK = 3_000;

@Controller('login')
@UseGuards(RateLimitGuard)
class BlockHeadersController {
  @Post()
  @Throttle({ name: 'login', limit: 2, ttl: TTL, blockDuration: BLOCK, key: userFromHeader })
  login(): string {
    return 'ok';
  }
}
/** The guard's counter of that route (`generateKey`: controller.handler:name), for block() by hand. */
const SCOPE = 'BlockHeadersController.login:login';

type Style = 'legacy' | 'draft' | 'draft-7' | 'draft-6';
const MODES: { headers: NonNullable<RateLimitOptions['headers']>; styles: Style[] }[] = [
  { headers: 'both', styles: ['legacy', 'draft'] },
  { headers: 'draft-7', styles: ['draft-7'] },
  { headers: 'draft-6', styles: ['draft-6'] },
];

/** What one header style says: units left and seconds until the quota is back. */
function said(res: Response, style: Style): { remaining: number; reset: number } {
  const h = res.headers as Record<string, string | undefined>;
  if (style === 'legacy')
    return { remaining: Number(h['x-ratelimit-remaining']), reset: Number(h['x-ratelimit-reset']) };
  if (style === 'draft-6') return { remaining: Number(h['ratelimit-remaining']), reset: Number(h['ratelimit-reset']) };
  if (style === 'draft-7') {
    const m = /^limit=2, remaining=(\d+), reset=(\d+)$/.exec(h.ratelimit ?? '');
    return { remaining: Number(m?.[1]), reset: Number(m?.[2]) };
  }
  const m = /^"login";r=(\d+);t=(\d+)$/.exec(h.ratelimit ?? '');
  return { remaining: Number(m?.[1]), reset: Number(m?.[2]) };
}

type Booted = HeaderApp<(typeof MODES)[number]>;

const post = (b: Booted, user: string) => request(b.http).post('/login').set('X-User-Id', user);

/**
 * A 429 of a blocked counter: remaining 0, Retry-After at least `minRetry` s and at most the block's seconds, every
 * style's reset at least Retry-After and at most the block's end; the body's retryAfterMs agrees with Retry-After.
 */
function expectBlocked(b: Booted, res: Response, minRetry: number, maxSeconds: number, step: string): string[] {
  const wrong: string[] = [];
  const retryAfter = Number(res.headers['retry-after']);
  if (res.status !== 429) wrong.push(`${b.label} ${step}: status ${res.status}`);
  if (!(retryAfter >= minRetry && retryAfter <= maxSeconds))
    wrong.push(`${b.label} ${step}: Retry-After ${retryAfter}`);
  if (Math.ceil(res.body.retryAfterMs / 1000) !== retryAfter)
    wrong.push(`${b.label} ${step}: body retryAfterMs ${res.body.retryAfterMs}, Retry-After ${retryAfter}`);
  for (const style of b.styles) {
    const { remaining, reset } = said(res, style);
    if (remaining !== 0 || !(reset >= retryAfter && reset <= maxSeconds))
      wrong.push(`${b.label} ${step} ${style}: remaining ${remaining} reset ${reset}, Retry-After ${retryAfter}`);
  }
  return wrong;
}

/** An admitted request on a counter with one unit charged: remaining 1, the window's reset (1 s), no Retry-After. */
function expectAdmitted(b: Booted, res: Response, step: string): string[] {
  const wrong: string[] = [];
  if (res.status !== 201 || res.headers['retry-after'] !== undefined)
    wrong.push(`${b.label} ${step}: status ${res.status}, Retry-After ${res.headers['retry-after']}`);
  for (const style of b.styles) {
    const { remaining, reset } = said(res, style);
    if (remaining !== 1 || reset !== TTL / 1000) wrong.push(`${b.label} ${step} ${style}: ${remaining} ${reset}`);
  }
  return wrong;
}

/** blockDuration: two admitted, the third refused and blocked; refused during the block, admitted after it. */
async function blockDurationScenario(b: Booted): Promise<string[]> {
  const user = randomUUID();
  const wrong = expectAdmitted(b, await post(b, user), 'first');
  await post(b, user);
  const sentAt = Date.now();
  const blocking = await post(b, user); // refused by Redis, which sets the block
  wrong.push(...expectBlocked(b, blocking, 3, 4, 'blocking refusal'));
  const deniedLocally = b.app.get(RateLimitService).stats().deniedLocally;
  wrong.push(...expectBlocked(b, await post(b, user), 3, 4, 'during the block')); // the block cache's answer, if on
  if (b.cache && b.app.get(RateLimitService).stats().deniedLocally !== deniedLocally + 1)
    wrong.push(`${b.label}: the block cache did not answer`);
  await sleep(TTL + 300); // the window is over, the block is not: the counter's own reset would be 0 now
  wrong.push(...expectBlocked(b, await post(b, user), 2, 3, 'after the window'));
  await sleep(Math.max(0, sentAt + BLOCK + 300 - Date.now()));
  wrong.push(...expectAdmitted(b, await post(b, user), 'after the block'));
  return wrong;
}

/** block(key, ms) by hand on a counter never charged: refused until then, admitted after with a normal reset. */
async function handBlockScenario(b: Booted): Promise<string[]> {
  const user = randomUUID();
  const sentAt = Date.now();
  await b.app.get(RateLimitService).block(user, HAND_BLOCK, { scope: SCOPE });
  const wrong = expectBlocked(b, await post(b, user), 2, 3, 'hand block');
  wrong.push(...expectBlocked(b, await post(b, user), 2, 3, 'hand block again'));
  await sleep(Math.max(0, sentAt + HAND_BLOCK + 300 - Date.now()));
  wrong.push(...expectAdmitted(b, await post(b, user), 'after the hand block'));
  return wrong;
}

describe.each(PLATFORMS_AND_TARGETS)('a blocked counter over HTTP on %s, %s', (platform, target) => {
  it('every header style: reset >= Retry-After (the block), remaining 0; admitted after it with a normal reset', async () => {
    const booted = await bootHeaderApps(platform, target, BlockHeadersController, MODES);
    const wrong = await Promise.all(booted.flatMap((b) => [blockDurationScenario(b), handBlockScenario(b)]));
    expect(wrong.flat()).toEqual([]);
  }, 30_000);
});

const ALGORITHMS: RateLimitAlgorithm[] = ['sliding-window', 'fixed-window', 'token-bucket'];

/** Blocked for about `ms`: refused, remaining 0, retryAfterMs the block's time left, resetMs at least that. */
function blockedFor(r: RateLimitResult, ms: number): boolean {
  return (
    !r.allowed &&
    r.remaining === 0 &&
    r.retryAfterMs > ms - 2_000 &&
    r.retryAfterMs <= ms &&
    r.resetMs >= r.retryAfterMs
  );
}

describe.each(['single', 'cluster'] as const)('a blocked counter in RateLimitService results on %s', (target) => {
  const services = new Map<boolean, RateLimitService>();
  beforeAll(async () => {
    for (const cache of [false, true]) {
      const app = await createToolkitApp({
        target,
        keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
        rateLimit: { blockCache: cache },
      });
      services.set(cache, app.get(RateLimitService));
    }
  });

  describe.each([false, true])('blockCache %s', (cache) => {
    it.each(ALGORITHMS)(
      '%s: consume, peek, consumeAll and consumeOrThrow say resetMs >= retryAfterMs (the block)',
      async (algorithm) => {
        const rl = services.get(cache) as RateLimitService;
        const key = randomUUID();
        const policy: RateLimitPolicy = { limit: 2, ttl: 1_000, algorithm, blockDuration: 60_000 };
        const loose: RateLimitPolicy = { limit: 100, ttl: 30_000, algorithm };
        await rl.consume(key, policy);
        await rl.consume(key, policy);
        const answers: [string, RateLimitResult][] = [];
        answers.push(['blocking consume', await rl.consume(key, policy)]);
        answers.push(['consume', await rl.consume(key, policy)]);
        answers.push(['peek', await rl.peek(key, policy)]);
        answers.push(['consumeAll', (await rl.consumeAll([{ key, policy }])).results[0]]);
        const two = await rl.consumeAll([
          { key, policy, name: 'blocked' },
          { key, policy: loose, name: 'loose' },
        ]);
        answers.push(['consumeAll of two', two.results[0]]);
        const err = await rl.consumeOrThrow(key, policy).catch((e: unknown) => e);
        const hand = randomUUID();
        await rl.block(hand, 60_000, policy);
        answers.push(['block() consume', await rl.consume(hand, policy)]);
        answers.push(['block() peek', await rl.peek(hand, policy)]);
        const wrong = answers
          .filter(([, r]) => !blockedFor(r, 60_000))
          .map(([step, r]) => `${step}: ${JSON.stringify(r)}`);
        expect(wrong).toEqual([]);
        expect(two.retryAfterMs).toBe(two.results[0].retryAfterMs);
        expect(err).toBeInstanceOf(RateLimitExceededError);
        expect((err as RateLimitExceededError).retryAfterMs).toBeGreaterThan(58_000);
      },
    );
  });
});
