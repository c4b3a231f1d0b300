import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { InvalidOptionsError, REDIS_CLIENT, RateLimitService, type RateLimitPolicy } from '../../lib/index.js';
import type { RateLimitAlgorithm } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { recordCommands } from '../support/command-recorder.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterAll(closeToolkitApps);

const ALGORITHMS: RateLimitAlgorithm[] = ['sliding-window', 'fixed-window', 'token-bucket'];

describe.each(['single', 'cluster'] as const)('reward() and penalty() points on %s', (target) => {
  let rl: RateLimitService;
  let client: RedisClient;
  beforeAll(async () => {
    const app = await createToolkitApp({ target });
    rl = app.get(RateLimitService);
    client = app.get<RedisClient>(REDIS_CLIENT);
  });

  it.each(ALGORITHMS)(
    '%s: points that are not an integer >= 1 are refused as given, before any Redis call',
    async (algorithm) => {
      const key = randomUUID();
      const policy: RateLimitPolicy = { limit: 5, ttl: 60_000, algorithm };
      for (let i = 0; i < 3; i++) expect((await rl.consume(key, policy)).allowed).toBe(true);
      const wrong: [() => Promise<number>, string][] = [
        [() => rl.reward(key, -2, policy), 'reward points must be a whole number >= 1, got -2'],
        [() => rl.penalty(key, -3, policy), 'penalty points must be a whole number >= 1, got -3'],
        [() => rl.reward(key, -1.5, policy), 'reward points must be a whole number >= 1, got -1.5'],
        [() => rl.penalty(key, 1.5, policy), 'penalty points must be a whole number >= 1, got 1.5'],
        [() => rl.reward(key, 0, policy), 'reward points must be a whole number >= 1, got 0'],
        [() => rl.penalty(key, Number.NaN, policy), 'penalty points must be a whole number >= 1, got NaN'],
        [() => rl.reward(key, '2' as unknown as number, policy), 'reward points must be a whole number >= 1, got "2"'],
      ];
      for (const [call, message] of wrong) {
        const { value, commands } = await recordCommands(client, () => call().catch((err: unknown) => err));
        expect(value).toBeInstanceOf(InvalidOptionsError);
        expect((value as Error).message).toBe(`rate limit: ${message}`);
        expect(commands).toEqual([]);
      }
      // nothing was given back or charged
      expect((await rl.peek(key, policy)).remaining).toBe(2);
      // the right way round
      expect(await rl.reward(key, 2, policy)).toBe(4);
      expect(await rl.penalty(key, 3, policy)).toBe(1);
      expect((await rl.peek(key, policy)).remaining).toBe(1);
    },
  );
});
