import 'reflect-metadata';
import { randomBytes, randomUUID } from 'node:crypto';
import type { ExecutionContext } from '@nestjs/common';
import {
  InvalidOptionsError,
  RateLimitService,
  REDIS_CLIENT,
  Throttle,
  type RateLimitPolicy,
} from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { OptionProblems } from '../../lib/common/option-checks.js';
import { resolveRateLimitOptions, type RateLimitOptions } from '../../lib/rate-limit/rate-limit.options.js';
import { recordCommands } from '../support/command-recorder.js';
import { errorOf } from '../support/errors.js';
import { closeToolkitApps, createToolkitApp, type ToolkitApp } from '../support/toolkit-app.js';

/*
 * Options of the rate limiter whose key is right and whose value's type is wrong. Each was taken without a word:
 * `rateLimit.defaults` `key: 5` (every request the guard applies them to failed, InvalidKeyError) and `failOpen: 'no'`
 * (truthy: failed open) started; a call's `failOpen: 'false'` failed open in an outage and `0` closed; a scope that is
 * not a string given to reward, penalty or a consumeAll check was a TypeError of node:crypto (reset and block said
 * InvalidOptionsError); a check's `name: 5` named the result 5.
 */

const prefix = () => `rtk-ot${randomBytes(5).toString('hex')}:`;

/** What resolving `rateLimit` finds wrong: the message of the InvalidOptionsError, '' when it is accepted. */
function atStart(rateLimit: RateLimitOptions): string {
  const problems = new OptionProblems();
  resolveRateLimitOptions(rateLimit, problems);
  try {
    problems.throwIfAny();
    return '';
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidOptionsError);
    return (err as Error).message;
  }
}

describe('rateLimit.defaults: key, name and failOpen checked at start as @Throttle checks them', () => {
  const withDefaults = (extra: object): RateLimitOptions => ({
    defaults: { limit: 5, ttl: 1_000, ...extra } as RateLimitPolicy,
  });

  it.each([
    [{ key: 5 }, 'rateLimit.defaults.key must be a non-empty string, got 5'],
    [{ key: '' }, 'rateLimit.defaults.key must be a non-empty string, got ""'],
    [{ failOpen: 'no' }, 'rateLimit.defaults.failOpen must be true or false, got "no"'],
    [{ failOpen: 0 }, 'rateLimit.defaults.failOpen must be true or false, got 0'],
    [{ name: 5 }, 'rateLimit.defaults.name must be a non-empty string, got 5'],
  ])('%j is refused, naming the option', async (extra, message) => {
    expect(atStart(withDefaults(extra))).toContain(message);
    // the same words as @Throttle's (one check, rate-limit.option-names.ts checkGuardValues)
    const field = Object.keys(extra)[0];
    const throttle = await errorOf(() => Throttle({ limit: 5, ttl: 1_000, ...extra } as never));
    expect(throttle).toBeInstanceOf(InvalidOptionsError);
    expect((throttle as Error).message).toContain(`@Throttle policy 1.${field} ${message.split(`.${field} `)[1]}`);
  });

  it('lists every wrong one together', () => {
    const message = atStart(withDefaults({ key: 5, failOpen: 'no', name: '' }));
    for (const field of ['key', 'failOpen', 'name']) expect(message).toContain(`rateLimit.defaults.${field} must be`);
  });

  it("accepts a string or function key, failOpen true or false and the name 'default'", () => {
    const byUser = (ctx: ExecutionContext) => String(ctx.getType());
    const accepted = [
      { key: 'everyone' },
      { key: byUser },
      { failOpen: false },
      { failOpen: true },
      { name: 'default' },
    ];
    for (const extra of accepted) expect(atStart(withDefaults(extra))).toBe('');
    expect(atStart(withDefaults({}))).toBe('');
  });

  it("refuses a name other than 'default' (the guard names the defaults' policy 'default'; it was dropped)", () => {
    // before: accepted, and the guard applied the defaults as 'default' (counters, @SkipThrottle) all the same
    expect(atStart(withDefaults({ name: 'api' }))).toContain(
      `rateLimit.defaults.name is "api", but the guard always names the defaults' policy "default"`,
    );
  });

  it('a module given such defaults does not start', async () => {
    const err = await createToolkitApp({
      keyPrefix: prefix(),
      rateLimit: { defaults: { limit: 5, ttl: 1_000, failOpen: 'no' } as RateLimitPolicy },
    }).then(
      (app) => app,
      (e: unknown) => e,
    );
    await closeToolkitApps();
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toContain('rateLimit.defaults.failOpen must be true or false, got "no"');
  });
});

describe('RateLimitService calls: failOpen, scope and name of the wrong type', () => {
  let app: ToolkitApp;
  let rl: RateLimitService;
  let client: RedisClient;
  const policy: RateLimitPolicy = { limit: 5, ttl: 60_000 };

  beforeAll(async () => {
    app = await createToolkitApp({ keyPrefix: prefix() });
    rl = app.get(RateLimitService);
    client = app.get<RedisClient>(REDIS_CLIENT);
  });
  afterAll(closeToolkitApps);

  /** Expects InvalidOptionsError matching `message`, and no Redis command sent. */
  const refused = async (run: () => Promise<unknown>, message: RegExp) => {
    const { value: err, commands } = await recordCommands(client, () => errorOf(run));
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toMatch(message);
    expect(commands).toEqual([]);
  };

  it.each([
    ['consume', (o: object) => rl.consume(randomUUID(), policy, o as never)],
    ['consumeOrThrow', (o: object) => rl.consumeOrThrow(randomUUID(), policy, o as never)],
    ['peek', (o: object) => rl.peek(randomUUID(), policy, o as never)],
    ['consumeAll', (o: object) => rl.consumeAll([{ key: randomUUID(), policy }], o as never)],
    ['peekAll', (o: object) => rl.peekAll([{ key: randomUUID(), policy }], o as never)],
  ])('%s refuses a failOpen that is not true or false, and takes true, false and none', async (_api, call) => {
    await refused(() => call({ failOpen: 'false' }), /rate limit options: failOpen must be true or false, got "false"/);
    await refused(() => call({ failOpen: 0 }), /failOpen must be true or false, got 0/);
    await refused(() => call({ failOpen: null }), /failOpen must be true or false, got null/);
    for (const options of [{ failOpen: true }, { failOpen: false }, {}, { failOpen: undefined }])
      expect((await call(options)).allowed).toBe(true);
  });

  it.each([
    ['reward', (scope: unknown) => rl.reward(randomUUID(), 1, policy, scope as never), 'rate limit reward'],
    ['penalty', (scope: unknown) => rl.penalty(randomUUID(), 1, policy, scope as never), 'rate limit penalty'],
    [
      'consumeAll',
      (scope: unknown) => rl.consumeAll([{ key: randomUUID(), policy, scope } as never]),
      'rate limit checks\\[0\\]',
    ],
    [
      'peekAll',
      (scope: unknown) => rl.peekAll([{ key: randomUUID(), policy, scope } as never]),
      'rate limit checks\\[0\\]',
    ],
    ['reset', (scope: unknown) => rl.reset(randomUUID(), { scope } as never), 'rate limit counter'],
    ['block', (scope: unknown) => rl.block(randomUUID(), 1_000, { scope } as never), 'rate limit counter'],
  ])(
    '%s refuses a scope that is not a string with InvalidOptionsError, as reset and block',
    async (_api, call, where) => {
      await refused(() => call(5), new RegExp(`^${where}: scope must be a string, got 5$`));
      await refused(() => call({}), /scope must be a string, got \{\}/);
      await refused(() => call(null), /scope must be a string, got null/);
      await call('a-scope'); // a string scope still names the counter
    },
  );

  it('consumeAll and peekAll refuse a check name that is not a non-empty string, and take a string', async () => {
    const check = (name: unknown) => [{ key: randomUUID(), policy, name } as never];
    await refused(() => rl.consumeAll(check(5)), /^rate limit checks\[0\]: name must be a non-empty string, got 5$/);
    await refused(() => rl.peekAll(check('')), /checks\[0\]: name must be a non-empty string, got ""/);
    await refused(
      () => rl.consumeAll([{ key: randomUUID(), policy, name: 'a' }, ...check({})]),
      /rate limit checks\[1\]: name must be a non-empty string, got \{\}/,
    );
    const decision = await rl.consumeAll([{ key: randomUUID(), policy, name: 'minute' }]);
    expect(decision.results[0].name).toBe('minute');
    expect((await rl.consumeAll([{ key: randomUUID(), policy }])).results[0].name).toBe('default');
  });
});
