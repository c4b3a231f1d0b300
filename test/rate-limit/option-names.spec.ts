import 'reflect-metadata';
import { randomBytes, randomUUID } from 'node:crypto';
import { Controller, Get, UseGuards } from '@nestjs/common';
import {
  InvalidOptionsError,
  RateLimitGuard,
  RateLimitService,
  REDIS_CLIENT,
  SkipThrottle,
  Throttle,
  type RateLimitPolicy,
} from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { recordCommands } from '../support/command-recorder.js';
import { errorOf } from '../support/errors.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const prefix = () => `rtk-o${randomBytes(5).toString('hex')}:`;

describe.each(['single', 'cluster'] as const)('rate-limit option names on %s', (target) => {
  // A misspelled key was ignored: `algoritm` ran the default algorithm, `blockDurationMs` never blocked, `failopen`
  // failed open, `scop` counted on the policy's own counter. Each is now InvalidOptionsError naming it, before any
  // Redis command.
  it('every call refuses a policy, options, check or counter key it does not know, with no Redis command', async () => {
    const app = await createToolkitApp({ target, keyPrefix: prefix() });
    const rl = app.get(RateLimitService);
    const client = app.get<RedisClient>(REDIS_CLIENT);
    const key = randomUUID();
    const policy: RateLimitPolicy = { limit: 5, ttl: 60_000 };
    const refused = async (run: () => Promise<unknown>, message: RegExp) => {
      const { value: err, commands } = await recordCommands(client, () => errorOf(run));
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect((err as Error).message).toMatch(message);
      expect(commands).toEqual([]);
    };
    const typo = { limit: 5, ttl: 60_000, algoritm: 'token-bucket' } as RateLimitPolicy;
    await refused(
      () => rl.consume(key, typo),
      /rate limit policy: algoritm is not a known option \(did you mean algorithm\?\); known: limit, ttl, algorithm,/,
    );
    // the same object again: still refused (nothing remembered it as checked)
    await refused(() => rl.consume(key, typo), /algoritm is not a known option/);
    await refused(
      () => rl.consumeOrThrow(key, { ...policy, blockDurationMs: 300_000 } as never),
      /rate limit policy: blockDurationMs is not a known option \(did you mean blockDuration\?\)/,
    );
    await refused(
      () => rl.peek(key, { ...policy, cots: 2 } as never),
      /cots is not a known option \(did you mean cost\?\)/,
    );
    await refused(
      () => rl.consume(key, policy, { failopen: false } as never),
      /rate limit options: failopen is not a known option \(did you mean failOpen\?\); known: failOpen/,
    );
    await refused(() => rl.consume(key, policy, null as never), /rate limit: options must be an object/);
    await refused(
      () => rl.consumeAll([{ key, policy, scop: 'x' } as never]),
      /rate limit checks\[0\]: scop is not a known option \(did you mean scope\?\); known: key, policy, scope, name/,
    );
    await refused(
      () =>
        rl.consumeAll([
          { key, policy, name: 'a' },
          { key, policy: { ...policy, bursts: 9 } as never, name: 'b' },
        ]),
      /rate limit policies\[1\]: bursts is not a known option \(did you mean burst\?\)/,
    );
    await refused(() => rl.peekAll([{ key, policy }], { failOpn: true } as never), /failOpn is not a known option/);
    await refused(() => rl.consumeAll([null as never]), /rate limit: checks\[0\] must be an object/);
    await refused(
      () => rl.reward(key, 1, { ...policy, algorithim: 'fixed-window' } as never),
      /algorithim is not a known option \(did you mean algorithm\?\)/,
    );
    await refused(() => rl.penalty(key, 1, { ...policy, Cost: 2 } as never), /Cost is not a known option/);
    await refused(
      () => rl.reset(key, { scope: 'x', algoritm: 'fixed-window' } as never),
      /rate limit counter: algoritm is not a known option \(did you mean algorithm\?\)/,
    );
    await refused(() => rl.reset(key, { scop: 'x' } as never), /scop is not a known option \(did you mean scope\?\)/);
    await refused(
      () => rl.reset(key, { scope: 'x', algorithm: 'token_bucket' } as never),
      /rate limit counter: algorithm must be one of sliding-window, fixed-window, token-bucket, got "token_bucket"/,
    );
    await refused(
      () => rl.block(key, 1_000, { ...policy, blockDuraton: 5 } as never),
      /blockDuraton is not a known option \(did you mean blockDuration\?\)/,
    );

    // every documented key is still accepted
    const all: RateLimitPolicy = {
      limit: 5,
      ttl: 60_000,
      algorithm: 'token-bucket',
      burst: 6,
      cost: 2,
      blockDuration: 0,
    };
    expect((await rl.consume(key, all, { failOpen: true })).allowed).toBe(true);
    expect((await rl.consumeAll([{ key, policy, scope: 's', name: 'n' }], { failOpen: false })).allowed).toBe(true);
    expect(await rl.reward(key, 1, all, 'elsewhere')).toBeGreaterThanOrEqual(0);
    await rl.block(key, 1_000, { scope: 's', algorithm: 'sliding-window' });
    expect(await rl.reset(key, { scope: 's', algorithm: 'sliding-window' })).toBe(2);
    // a policy given with its scope (a guard's check.policy plus its scope) names the scope's counter
    expect(await rl.reset(key, { ...all, scope: 'none' })).toBe(0);
  });
});

describe('rate-limit decorator option names', () => {
  it('@Throttle refuses an unknown key when the class is defined, naming the nearest one', () => {
    const declare = () => {
      @Throttle({ limit: 5, ttl: 60_000, blockDurationMs: 300_000 } as never)
      class Declared {}
      return Declared;
    };
    expect(declare).toThrow(InvalidOptionsError);
    expect(declare).toThrow(/blockDurationMs is not a known option \(did you mean blockDuration\?\)/);
    const onMethod = () => {
      class Declared {
        @Throttle({ name: 'a', limit: 1, ttl: 1_000 }, {
          name: 'b',
          limit: 1,
          ttl: 1_000,
          skipSuccessfullRequests: true,
        } as never)
        m(): number {
          return 1;
        }
      }
      return Declared;
    };
    expect(onMethod).toThrow(
      /@Throttle policy 2 \("b"\)\.skipSuccessfullRequests is not a known option \(did you mean skipSuccessfulRequests\?\)/,
    );
    // @nestjs/throttler's form, a record of named policies: the error says how to write it here
    expect(() => Throttle({ default: { limit: 5, ttl: 60_000 } } as never)).toThrow(
      /default is not a known option \(@Throttle takes each policy itself: @Throttle\(\{ name: 'default', limit, ttl/,
    );
    // what the docs show is accepted
    Throttle({
      name: 'all',
      limit: 5,
      ttl: 1_000,
      algorithm: 'token-bucket',
      burst: 6,
      cost: 1,
      blockDuration: 1,
      key: 'k',
      failOpen: false,
      skipSuccessfulRequests: true,
      skipFailedRequests: false,
      allowList: ['10.0.0.0/8'],
      denyList: ['192.0.2.1'],
    });
  });

  it('@SkipThrottle refuses a value that is not true/false or a record of them when the class is defined', () => {
    expect(() => SkipThrottle('yes' as never)).toThrow(InvalidOptionsError);
    expect(() => SkipThrottle('yes' as never)).toThrow(/@SkipThrottle takes true, false or \{ policyName: true \}/);
    expect(() => SkipThrottle({ short: 'yes' } as never)).toThrow(/@SkipThrottle\.short must be true or false/);
    SkipThrottle();
    SkipThrottle(false);
    SkipThrottle({ short: true, long: false });
  });

  // @SkipThrottle({ defualt: true }) skipped nothing, without a word: a name is only known once the module knows
  // which policies apply, so the module refuses to start.
  it('@SkipThrottle naming no policy that applies there fails the start, naming the nearest one', async () => {
    @Controller()
    @UseGuards(RateLimitGuard)
    class Defaults {
      @Get('a')
      @SkipThrottle({ defualt: true })
      a(): string {
        return 'a';
      }
    }
    const err = await errorOf(() => createToolkitApp({ keyPrefix: prefix(), controllers: [Defaults] }));
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toMatch(
      /Defaults\.a: @SkipThrottle names defualt, which no policy there is named \(did you mean default\?\); policies: default/,
    );

    @Controller()
    @Throttle({ name: 'short', limit: 1, ttl: 1_000 }, { name: 'long', limit: 5, ttl: 60_000 })
    @SkipThrottle({ shrot: true })
    class Named {
      @Get('b')
      b(): string {
        return 'b';
      }
    }
    await expect(createToolkitApp({ keyPrefix: prefix(), controllers: [Named] })).rejects.toThrow(
      /Named: @SkipThrottle names shrot, which no policy there is named \(did you mean short\?\); policies: short, long/,
    );

    // a class-level skip may name a policy of one of its handlers only; a handler's skip, one of the class's
    @Controller()
    @SkipThrottle({ login: true })
    class Fine {
      @Get('login')
      @Throttle({ name: 'login', limit: 1, ttl: 1_000 })
      login(): string {
        return 'login';
      }
      @Get('other')
      other(): string {
        return 'other';
      }
    }
    @Controller()
    @Throttle({ name: 'hour', limit: 5, ttl: 3_600_000 })
    class AlsoFine {
      @Get('c')
      @SkipThrottle({ hour: true })
      c(): string {
        return 'c';
      }
    }
    await createToolkitApp({ keyPrefix: prefix(), controllers: [Fine, AlsoFine] });
  });
});
