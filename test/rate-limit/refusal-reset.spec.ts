import 'reflect-metadata';
import type { ExecutionContext } from '@nestjs/common';
import { Controller, Post, UseGuards } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import request, { type Response } from 'supertest';
import { RateLimitGuard, Throttle, type RateLimitOptions } from '../../lib/index.js';
import type { RateLimitDecision } from '../../lib/advanced.js';
import { writeRateLimitHeaders } from '../../lib/rate-limit/rate-limit.headers.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { userFromHeader } from '../support/rate-limit-http.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, PLATFORMS_AND_TARGETS } from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { sleep } from '../support/wait.js';

// On every 429, in every header style, the reset (X-RateLimit-Reset, draft-6 RateLimit-Reset, draft-7 reset=,
// draft-8 t= of the policy Retry-After comes from) is at least Retry-After, and Retry-After at least 1 s. Before
// 2026-12-03: a fixed window refused in its last ms (Redis answers retryAfterMs 0, resetMs 0) gave Retry-After: 1 with
// a reset of 0; and the insurance limiter (Redis unreachable) answered a cost over its per-process limit, which it
// can never admit, with the time left in its window (Retry-After: 1 near the window's end, then refused again), where
// Redis answers a cost over the limit with a whole window.

afterAll(closeToolkitApps);

type Mode = NonNullable<Exclude<RateLimitOptions['headers'], false>>;
const MODES: Mode[] = ['draft', 'legacy', 'both', 'draft-7', 'draft-6'];

/** The cost of a request: its `X-Cost` header (default 1). */
const costFromHeader = (ctx: ExecutionContext): number =>
  Number(ctx.switchToHttp().getRequest<{ headers: Record<string, string> }>().headers['x-cost'] ?? 1);

/** The insured window: 4 per 2.5 s, so 2 per process with divideLimitBy: 2. */
const WINDOW = 2_500;
/** The window in whole seconds, as headers say it (rounded up). */
const WINDOW_S = Math.ceil(WINDOW / 1000);

@Controller('refusal-reset')
@UseGuards(RateLimitGuard)
class RefusalResetController {
  @Post('insured')
  @Throttle({ name: 'w', limit: 4, ttl: WINDOW, algorithm: 'fixed-window', cost: costFromHeader, key: userFromHeader })
  insured(): string {
    return 'ok';
  }

  /** A window of 25 ms, so many requests fall in its last ms. */
  @Post('short')
  @Throttle({ name: 's', limit: 1, ttl: 25, algorithm: 'fixed-window', key: userFromHeader })
  short(): string {
    return 'ok';
  }
}

/** Every reset a 429 gives, by style (each here has one policy): seconds until the quota is back. */
function resets(res: Response): Record<string, number> {
  const h = res.headers as Record<string, string | undefined>;
  const out: Record<string, number> = {};
  if (h['x-ratelimit-reset'] !== undefined) out.legacy = Number(h['x-ratelimit-reset']);
  if (h['ratelimit-reset'] !== undefined) out['draft-6'] = Number(h['ratelimit-reset']);
  const draft7 = /reset=(\d+)$/.exec(h.ratelimit ?? '');
  if (draft7) out['draft-7'] = Number(draft7[1]);
  const draft8 = /;t=(\d+)$/.exec(h.ratelimit ?? '');
  if (draft8) out.draft = Number(draft8[1]);
  return out;
}

/** What is wrong with a 429: Retry-After under 1 s, a reset under Retry-After, or no reset at all. */
function refusalProblems(res: Response, step: string): string[] {
  const retryAfter = Number(res.headers['retry-after']);
  const all = resets(res);
  const wrong: string[] = [];
  if (res.status !== 429) return [`${step}: status ${res.status}`];
  if (!(retryAfter >= 1)) wrong.push(`${step}: Retry-After ${res.headers['retry-after']}`);
  if (Object.keys(all).length === 0) wrong.push(`${step}: no reset header`);
  for (const [style, reset] of Object.entries(all))
    if (!(reset >= retryAfter)) wrong.push(`${step} ${style}: reset ${reset} < Retry-After ${retryAfter}`);
  return wrong;
}

describe.each(PLATFORMS)('insurance refusals over HTTP on %s (Redis unreachable)', (platform) => {
  let server: RedisServerHandle;
  const apps = new Map<Mode, Server>();
  beforeAll(async () => {
    server = await startRedisServer();
    for (const headers of MODES) {
      const app = await bootToolkitApp({
        target: { url: server.url },
        platform,
        http: true,
        commandTimeout: 300,
        maxReconnectDelay: 100,
        keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
        rateLimit: { headers, insurance: { divideLimitBy: 2 }, warnIntervalMs: 60_000 },
        controllers: [RefusalResetController],
      });
      apps.set(headers, app.app.getHttpServer() as Server);
    }
    await server.kill();
  });
  afterAll(async () => {
    await closeToolkitApps();
    await server.stop();
  });

  const post = (mode: Mode, user: string, cost: number) =>
    request(apps.get(mode) as Server)
      .post('/refusal-reset/insured')
      .set('X-User-Id', user)
      .set('X-Cost', String(cost));

  it('a cost over the per-process limit (never admitted) is refused for a whole window, as Redis answers it', async () => {
    const scenario = async (mode: Mode): Promise<string[]> => {
      const user = randomUUID();
      const from = Date.now();
      const first = await post(mode, user, 1);
      if (first.status !== 201) return [`${mode}: first request ${first.status}`];
      // 150 ms before the insurance window ends: a cost of 3 > 2 would not fit in the next window either
      await sleep(Math.max(0, from + WINDOW - 150 - Date.now()));
      const res = await post(mode, user, 3);
      const wrong = refusalProblems(res, `${mode} cost 3`);
      if (res.headers['retry-after'] !== String(WINDOW_S) || res.body.retryAfterMs !== WINDOW)
        wrong.push(`${mode}: Retry-After ${res.headers['retry-after']}, retryAfterMs ${res.body.retryAfterMs}`);
      for (const [style, reset] of Object.entries(resets(res)))
        if (reset !== WINDOW_S) wrong.push(`${mode} ${style}: reset ${reset}`);
      return wrong;
    };
    const wrong = await Promise.all(MODES.map(scenario));
    expect(wrong.flat()).toEqual([]);
  }, 20_000);

  it('a refusal in the last ms of an insurance window: reset >= Retry-After >= 1 s, and admitted after it', async () => {
    // The window opens at the first charge, decided between `from` and its answer; the request sent 100 ms before it
    // ends must be refused when it was answered before `from + WINDOW` (then it was decided inside the window). One
    // answered later may have been decided in the next window (a busy box: it happened in CI with three test shards),
    // which tells nothing: that attempt is made again with a new user, at most ATTEMPTS times.
    const ATTEMPTS = 4;
    const attempt = async (mode: Mode): Promise<string[] | undefined> => {
      const user = randomUUID();
      const from = Date.now();
      const first = await post(mode, user, 2);
      if (first.status !== 201) return [`${mode}: first request ${first.status}`];
      await sleep(Math.max(0, from + WINDOW - 100 - Date.now()));
      const res = await post(mode, user, 1);
      if (res.status === 201 && Date.now() >= from + WINDOW) return undefined;
      const wrong = refusalProblems(res, `${mode} end of window`);
      await sleep(Number(res.headers['retry-after']) * 1_000);
      const after = await post(mode, user, 1);
      if (after.status !== 201) wrong.push(`${mode}: after Retry-After ${after.status}`);
      return wrong;
    };
    const scenario = async (mode: Mode): Promise<string[]> => {
      for (let i = 0; i < ATTEMPTS; i++) {
        const wrong = await attempt(mode);
        if (wrong !== undefined) return wrong;
      }
      return [`${mode}: every one of ${ATTEMPTS} attempts was answered after its window could have ended`];
    };
    const wrong = await Promise.all(MODES.map(scenario));
    expect(wrong.flat()).toEqual([]);
  }, 40_000);
});

describe.each(PLATFORMS_AND_TARGETS)(
  'Redis refusals in the last ms of a fixed window on %s, %s',
  (platform, target) => {
    it('every 429 says reset >= Retry-After >= 1 s in every style (Redis answers 0 ms in the last ms)', async () => {
      const scenario = async (headers: Mode): Promise<{ wrong: string[]; refusals: number }> => {
        const app = await createToolkitApp({
          target,
          platform,
          http: true,
          keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
          rateLimit: { headers },
          controllers: [RefusalResetController],
        });
        const http = app.app.getHttpServer() as Server;
        const wrong: string[] = [];
        let refusals = 0;
        for (let window = 0; window < 30; window++) {
          const user = randomUUID();
          // requests in waves until one is admitted again: the window has passed, the ones before fell in its end
          for (let wave = 0; wave < 100; wave++) {
            const answers = await Promise.all(
              Array.from({ length: 8 }, () => request(http).post('/refusal-reset/short').set('X-User-Id', user)),
            );
            for (const res of answers.filter((r) => r.status === 429)) {
              refusals++;
              wrong.push(...refusalProblems(res, `${headers}`));
            }
            if (wave > 0 && answers.some((r) => r.status === 201)) break;
          }
        }
        return { wrong: [...new Set(wrong)], refusals };
      };
      const runs = await Promise.all(MODES.map(scenario));
      expect(runs.flatMap((r) => r.wrong)).toEqual([]);
      expect(runs.every((r) => r.refusals > 100)).toBe(true);
    }, 30_000);
  },
);

describe('writeRateLimitHeaders of a refusal', () => {
  /** A refused decision of one fixed-window policy with these figures. */
  const refused = (retryAfterMs: number, resetMs: number): RateLimitDecision => ({
    allowed: false,
    retryAfterMs,
    results: [
      {
        name: 'w',
        policy: { limit: 5, ttl: 60_000, algorithm: 'fixed-window', burst: 5, cost: 1, blockDuration: 0 },
        allowed: false,
        limit: 5,
        remaining: 0,
        resetMs,
        retryAfterMs,
      },
    ],
  });

  it.each(MODES)('%s: every reset at least the Retry-After the guard writes (at least 1 s)', (mode) => {
    const wrong: string[] = [];
    for (const [retryAfterMs, resetMs] of [
      [0, 0],
      [1, 1],
      [999, 999],
      [1_000, 1_000],
      [1_001, 1_001],
      [2_500, 2_500],
    ]) {
      const headers: Record<string, string> = {};
      writeRateLimitHeaders(mode, refused(retryAfterMs, resetMs), (name, value) => {
        headers[name.toLowerCase()] = String(value);
      });
      // as RateLimitGuard writes it
      const retryAfter = Math.max(1, Math.ceil(Math.max(1, retryAfterMs) / 1000));
      const res = { status: 429, headers: { ...headers, 'retry-after': String(retryAfter) } } as unknown as Response;
      wrong.push(...refusalProblems(res, `retry ${retryAfterMs} reset ${resetMs}`));
    }
    expect(wrong).toEqual([]);
  });
});
