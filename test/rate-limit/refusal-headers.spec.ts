import 'reflect-metadata';
import { Controller, Post, UseGuards } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import request, { type Response } from 'supertest';
import { RateLimitGuard, RateLimitService, Throttle, type RateLimitOptions } from '../../lib/index.js';
import type { RateLimitAlgorithm } from '../../lib/advanced.js';
import { bootHeaderApps, type HeaderApp, userFromHeader } from '../support/rate-limit-http.js';
import { closeToolkitApps, PLATFORMS_AND_TARGETS } from '../support/toolkit-app.js';

// The single-policy header styles (X-RateLimit-*, draft-6 RateLimit-*, draft-7 combined RateLimit) of a decision of
// several policies with cost > 1. An admitted response shows the policy with the fewest units left; a 429 shows the
// policy that refused with the longest retry (the one Retry-After comes from), so its reset is never before
// Retry-After. Before 2026-12-03 a 429 showed the fewest units left too: with cost 3 the refusing 'slow' policy (2
// left, back in 15 s) lost to 'fast' (1 left, back in 2 s), and the headers said reset 2 with Retry-After 15 (token
// bucket: 2 with 3): a client trusting the reset came back too early and was refused again.

afterAll(closeToolkitApps);

/** Both policies cost 3 per request. slow: 5 per 15 s; fast: 4 per 2 s. */
const SLOW = { name: 'slow', limit: 5, ttl: 15_000, cost: 3, key: userFromHeader } as const;
const FAST = { name: 'fast', limit: 4, ttl: 2_000, cost: 3, key: userFromHeader } as const;

@Controller('refusal')
@UseGuards(RateLimitGuard)
class RefusalHeadersController {
  @Post('sliding-window')
  @Throttle({ ...SLOW, algorithm: 'sliding-window' }, { ...FAST, algorithm: 'sliding-window' })
  sliding(): string {
    return 'ok';
  }

  @Post('fixed-window')
  @Throttle({ ...SLOW, algorithm: 'fixed-window' }, { ...FAST, algorithm: 'fixed-window' })
  fixed(): string {
    return 'ok';
  }

  @Post('token-bucket')
  @Throttle({ ...SLOW, algorithm: 'token-bucket' }, { ...FAST, algorithm: 'token-bucket' })
  bucket(): string {
    return 'ok';
  }
}

const ALGORITHMS: RateLimitAlgorithm[] = ['sliding-window', 'fixed-window', 'token-bucket'];

type Style = 'legacy' | 'draft-7' | 'draft-6';
const MODES: { headers: NonNullable<RateLimitOptions['headers']>; styles: Style[]; draft8: boolean }[] = [
  { headers: 'both', styles: ['legacy'], draft8: true },
  { headers: 'draft-7', styles: ['draft-7'], draft8: false },
  { headers: 'draft-6', styles: ['draft-6'], draft8: false },
];

/** What one single-policy style says: limit, units left, seconds until the quota is back, window (if it says). */
interface Said {
  limit: number;
  remaining: number;
  reset: number;
  window?: number;
}

function said(res: Response, style: Style): Said {
  const h = res.headers as Record<string, string | undefined>;
  if (style === 'legacy') {
    return {
      limit: Number(h['x-ratelimit-limit']),
      remaining: Number(h['x-ratelimit-remaining']),
      reset: Number(h['x-ratelimit-reset']),
    };
  }
  const window = Number(/^(\d+);w=(\d+)$/.exec(h['ratelimit-policy'] ?? '')?.[2]);
  if (style === 'draft-6') {
    return {
      limit: Number(h['ratelimit-limit']),
      remaining: Number(h['ratelimit-remaining']),
      reset: Number(h['ratelimit-reset']),
      window,
    };
  }
  const m = /^limit=(\d+), remaining=(\d+), reset=(\d+)$/.exec(h.ratelimit ?? '');
  return { limit: Number(m?.[1]), remaining: Number(m?.[2]), reset: Number(m?.[3]), window };
}

/** The draft-8 `t` (seconds until the quota is back) of one named policy, from `RateLimit: "a";r=1;t=2, ...`. */
function draft8Reset(res: Response, name: string): number {
  const m = new RegExp(`"${name}";r=\\d+;t=(\\d+)`).exec(String(res.headers.ratelimit ?? ''));
  return Number(m?.[1]);
}

type Booted = HeaderApp<(typeof MODES)[number]>;

const post = (b: Booted, algorithm: RateLimitAlgorithm, user: string) =>
  request(b.http).post(`/refusal/${algorithm}`).set('X-User-Id', user);

/**
 * A 429 of 'slow' (and 'fast'): Retry-After from slow (at least 3 s, at most 15 s); every single-policy style shows
 * slow (limit 5, window 15 s) with a reset at least Retry-After and at most 15 s; `remaining` when given.
 */
function expectRefusedBySlow(b: Booted, res: Response, step: string, remaining?: number): string[] {
  const wrong: string[] = [];
  const retryAfter = Number(res.headers['retry-after']);
  if (res.status !== 429) wrong.push(`${step}: status ${res.status}`);
  if (!(retryAfter >= 3 && retryAfter <= 15)) wrong.push(`${step}: Retry-After ${res.headers['retry-after']}`);
  if (Math.ceil(res.body.retryAfterMs / 1000) !== retryAfter)
    wrong.push(`${step}: body retryAfterMs ${res.body.retryAfterMs}, Retry-After ${retryAfter}`);
  for (const style of b.styles) {
    const s = said(res, style);
    const right =
      s.limit === 5 &&
      (s.window === undefined || s.window === 15) &&
      s.reset >= retryAfter &&
      s.reset <= 15 &&
      (remaining === undefined ? s.remaining <= 2 : s.remaining === remaining);
    if (!right) wrong.push(`${step} ${style}: ${JSON.stringify(s)}, Retry-After ${retryAfter}`);
  }
  if (b.draft8 && !(draft8Reset(res, 'slow') >= retryAfter))
    wrong.push(`${step} draft: ${res.headers.ratelimit}, Retry-After ${retryAfter}`);
  return wrong;
}

/** The first request (admitted, 3 units charged of each): the styles show fast, which has fewer left (1 vs 2). */
function expectAdmittedShowsFast(b: Booted, res: Response, step: string): string[] {
  const wrong: string[] = [];
  if (res.status !== 201 || res.headers['retry-after'] !== undefined)
    wrong.push(`${step}: status ${res.status}, Retry-After ${res.headers['retry-after']}`);
  for (const style of b.styles) {
    const s = said(res, style);
    const right = s.limit === 4 && s.remaining === 1 && (s.window === undefined || s.window === 2);
    if (!right || s.reset < 1 || s.reset > 2) wrong.push(`${step} ${style}: ${JSON.stringify(s)}`);
  }
  return wrong;
}

/** Admitted (slow 2 left, fast 1 left), then refused twice: slow refuses with 2 left, fast with 1 left. */
async function scenario(b: Booted, algorithm: RateLimitAlgorithm): Promise<string[]> {
  const label = `${b.label} ${algorithm}`;
  const user = randomUUID();
  const wrong = expectAdmittedShowsFast(b, await post(b, algorithm, user), `${label} admitted`);
  wrong.push(...expectRefusedBySlow(b, await post(b, algorithm, user), `${label} refused`, 2));
  // with the block cache on, this refusal is its answer (the figures Redis would give: 2 left, as above)
  wrong.push(...expectRefusedBySlow(b, await post(b, algorithm, user), `${label} refused again`, 2));
  return wrong;
}

describe.each(PLATFORMS_AND_TARGETS)(
  'a refusal of two policies with cost 3 over HTTP on %s, %s',
  (platform, target) => {
    it('a 429 shows the refusing policy (reset >= Retry-After); an admitted response the fewest units left', async () => {
      const booted = await bootHeaderApps(platform, target, RefusalHeadersController, MODES);
      const denied = booted.map((b) => b.app.get(RateLimitService).stats().deniedLocally);
      const wrong = await Promise.all(booted.flatMap((b) => ALGORITHMS.map((a) => scenario(b, a))));
      expect(wrong.flat()).toEqual([]);
      // the block cache answered each third request (one per algorithm), so its answers were checked too
      expect(booted.map((b, i) => b.app.get(RateLimitService).stats().deniedLocally - denied[i])).toEqual(
        booted.map((b) => (b.cache ? 3 : 0)),
      );
    }, 30_000);
  },
);
