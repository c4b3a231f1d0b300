import 'reflect-metadata';
import { Controller, Get, Injectable } from '@nestjs/common';
import { InvalidOptionsError, Throttle } from '../../lib/index.js';
import { ClientAddressResolver } from '../../lib/advanced.js';
import { groupAddress, normalizeAddress } from '../../lib/rate-limit/rate-limit.client-address.js';
import { OptionProblems } from '../../lib/common/option-checks.js';
import { resolveRateLimitOptions, type RateLimitPolicy } from '../../lib/rate-limit/rate-limit.options.js';
import { resolveCallPolicy } from '../../lib/rate-limit/rate-limit.policy-resolver.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterAll(closeToolkitApps);

describe('rate-limit options', () => {
  it('lists every wrong option by path', () => {
    const problems = new OptionProblems();
    resolveRateLimitOptions(
      {
        defaults: { limit: 0, ttl: -5, algorithm: 'leaky' as 'fixed-window' },
        headers: 'yes' as 'draft',
        trustProxy: ['10.0.0.0/33', 'nonsense'],
        ipv6Subnet: 200,
        insurance: { divideLimitBy: 0 },
      },
      problems,
    );
    expect(() => problems.throwIfAny()).toThrow(InvalidOptionsError);
    let message = '';
    try {
      problems.throwIfAny();
    } catch (err) {
      message = (err as Error).message;
    }
    for (const path of [
      'rateLimit.defaults.limit',
      'rateLimit.defaults.ttl',
      'rateLimit.defaults.algorithm',
      'rateLimit.headers',
      'rateLimit.trustProxy[0]',
      'rateLimit.trustProxy[1]',
      'rateLimit.ipv6Subnet',
      'rateLimit.insurance.divideLimitBy',
    ]) {
      expect(message).toContain(path);
    }
  });

  it('fills defaults', () => {
    const resolved = resolveRateLimitOptions(undefined, new OptionProblems());
    expect(resolved).toMatchObject({
      defaults: { limit: 100, ttl: 60_000, algorithm: 'sliding-window' },
      failOpen: true,
      headers: 'draft',
      trustProxy: false,
      ipv6Subnet: 64,
      insurance: false,
    });
  });

  it('@Throttle rejects wrong static values and duplicate names when decorating', () => {
    expect(() => Throttle({ limit: -1, ttl: 1_000 })).toThrow(/@Throttle policy 1\.limit/);
    expect(() => Throttle({ limit: 1, ttl: 1_000 }, { limit: 2, ttl: 1_000, name: 'default' })).toThrow(
      /two policies named "default"/,
    );
    expect(() => Throttle()).toThrow(InvalidOptionsError);
    expect(() => Throttle({ limit: () => 5, ttl: 1_000 }, { limit: 10, ttl: 60_000 })).not.toThrow();
  });
});

describe('startup checks a static policy as every call does', () => {
  /** The problems resolveRateLimitOptions finds in `rateLimit.defaults` (empty: accepted at start). */
  const atStart = (defaults: RateLimitPolicy): string => {
    const problems = new OptionProblems();
    resolveRateLimitOptions({ defaults }, problems);
    try {
      problems.throwIfAny();
      return '';
    } catch (err) {
      return (err as Error).message;
    }
  };
  /** What a call with that policy says (empty: accepted). */
  const perCall = (policy: RateLimitPolicy): string => {
    try {
      resolveCallPolicy(policy, 'policy', 'sliding-window');
      return '';
    } catch (err) {
      return (err as Error).message;
    }
  };
  const base = { limit: 5, ttl: 60_000 };
  const refused: [RateLimitPolicy, string][] = [
    [{ limit: 10, ttl: 60_000, blockDuration: 1500.5 }, 'blockDuration'],
    [{ ...base, cost: 10 }, 'cost'],
    [{ ...base, algorithm: 'fixed-window', cost: 6 }, 'cost'],
    [{ ...base, algorithm: 'token-bucket', burst: 2, cost: 3 }, 'cost'],
    [{ ...base, cost: 1.5 }, 'cost'],
    [{ ...base, ttl: 1.5 }, 'ttl'],
    [{ ...base, burst: 0 }, 'burst'],
    [{ limit: 200_000, ttl: 1_000 }, 'limit'], // over the sliding window's cap (at decoration: its hard maximum)
  ];
  const accepted: RateLimitPolicy[] = [
    base,
    { ...base, cost: 5, blockDuration: 1_500 },
    { ...base, algorithm: 'token-bucket', burst: 8, cost: 8 }, // a bucket's capacity is its burst
    { ...base, algorithm: 'fixed-window', burst: 2, cost: 5 }, // burst is the bucket's only
    { ...base, cost: 0, blockDuration: 0 },
  ];

  it.each(refused)('refuses %j at start (naming %s) and per call alike', (policy, field) => {
    const start = atStart(policy);
    expect(start).toContain(`rateLimit.defaults.${field} must be`);
    const call = perCall(policy);
    expect(call).toContain(`policy.${field} must be`);
    // the same words: one check
    expect(start.split(`rateLimit.defaults.${field} `)[1]).toBe(call.split(`policy.${field} `)[1]);
    const path = `@Throttle policy 2 ("named").${field} must be`;
    expect(() => Throttle({ limit: 1, ttl: 1_000 }, { ...policy, name: 'named' })).toThrow(path);
  });

  it.each(accepted)('accepts %j at start, at decoration and per call', (policy) => {
    expect(atStart(policy)).toBe('');
    expect(perCall(policy)).toBe('');
    expect(() => Throttle(policy)).not.toThrow();
  });

  it.each([
    [{ limit: 10, ttl: 60_000, blockDuration: 1500.5 }, 'blockDuration'],
    [{ limit: 5, ttl: 60_000, cost: 10 }, 'cost'],
    [{ limit: 5, ttl: 60_000, algorithm: 'token-bucket', burst: 2, cost: 3 }, 'cost'],
  ] as [RateLimitPolicy, string][])('module init rejects rateLimit.defaults %j naming %s', async (defaults, field) => {
    const err = await createToolkitApp({ rateLimit: { defaults } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toContain(`rateLimit.defaults.${field} must be`);
  });

  it('a @Throttle value given as a function is checked per request; the others, and what they decide, here', () => {
    expect(() => Throttle({ limit: () => 5, ttl: 60_000, cost: 10 })).not.toThrow();
    expect(() => Throttle({ limit: 5, ttl: 60_000, cost: () => 10 })).not.toThrow();
    expect(() =>
      Throttle({ limit: 5, ttl: 60_000, algorithm: () => 'token-bucket', burst: 10, cost: 8 }),
    ).not.toThrow();
    expect(() => Throttle({ limit: 5, ttl: () => 1_000, blockDuration: 1500.5 })).toThrow(/policy 1\.blockDuration/);
    // no algorithm: the module's default decides it; a cost over both the limit and the burst is refused by any
    expect(() => Throttle({ limit: 5, ttl: 60_000, burst: 8, cost: 6 })).not.toThrow();
    expect(() => Throttle({ limit: 5, ttl: 60_000, burst: 8, cost: 9 })).toThrow(/policy 1\.cost must be/);
    expect(() => Throttle({ limit: 5, ttl: 60_000, cost: 6 })).toThrow(/policy 1\.cost must be/);
  });
});

describe('a @Throttle with no algorithm (or under the configured sliding-window cap) is checked at module init', () => {
  // at decoration the module's default algorithm and sliding-window cap are not known: checked when the module starts
  @Controller()
  class BucketOnlyController {
    @Get('a')
    @Throttle({ limit: 5, ttl: 60_000 }, { name: 'burst', limit: 5, ttl: 60_000, burst: 8, cost: 6 })
    a() {
      return 'a';
    }
  }
  @Injectable()
  @Throttle({ limit: 20_000, ttl: 60_000 })
  class WideGateway {}

  it('a cost over the limit with the sliding window default: init fails naming the handler, policy and field', async () => {
    const err = await createToolkitApp({ controllers: [BucketOnlyController] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toContain(
      'BucketOnlyController.a: @Throttle policy 2 ("burst").cost must be an integer from 0 to 5',
    );
    // under a token-bucket default the burst is the capacity: it starts
    const app = await createToolkitApp({
      controllers: [BucketOnlyController],
      rateLimit: { defaults: { limit: 10, ttl: 1_000, algorithm: 'token-bucket' } },
    });
    await app.close();
  });

  it('a limit over rateLimit.maxSlidingWindowLimit on a class: init fails; with the cap raised it starts', async () => {
    const err = await createToolkitApp({ providers: [WideGateway] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toContain('WideGateway: @Throttle policy 1 ("default").limit must be at most 10000');
    const app = await createToolkitApp({ providers: [WideGateway], rateLimit: { maxSlidingWindowLimit: 20_000 } });
    await app.close();
  });
});

describe('client address', () => {
  it('groups IPv6 by /64 and unwraps IPv4-mapped addresses', () => {
    expect(groupAddress('2001:db8:1:2:3:4:5:6', 64)).toBe('2001:db8:1:2::/64');
    expect(groupAddress('2001:db8:1:2::ffff', 64)).toBe('2001:db8:1:2::/64');
    expect(groupAddress('2001:db8::1', 48)).toBe('2001:db8:0::/48');
    expect(groupAddress('2001:db8:1:2:3:4:5:6', 128)).toBe('2001:db8:1:2:3:4:5:6');
    expect(groupAddress('203.0.113.9', 64)).toBe('203.0.113.9');
    expect(normalizeAddress('::ffff:203.0.113.9')).toBe('203.0.113.9');
    expect(normalizeAddress(' [2001:db8::1] ')).toBe('2001:db8::1');
    expect(normalizeAddress('fe80::1%eth0')).toBe('fe80::1');
    expect(normalizeAddress('203.0.113.9:4431')).toBe('203.0.113.9');
  });

  it('maps IPv4 embedded in IPv6 (mapped in hex, NAT64 64:ff9b::/96, IPv4-compatible) to the IPv4 address', () => {
    // Each of these is one IPv4 client: grouped by /64 they would all share one bucket with every other IPv4 client
    // behind the same front (issue 17 item 13).
    for (const form of [
      '::ffff:c633:6407',
      '::FFFF:C633:6407',
      '0:0:0:0:0:ffff:c633:6407',
      '64:ff9b::c633:6407',
      '64:ff9b::198.51.100.7',
      '[64:ff9b::c633:6407]',
      '::198.51.100.7',
      '::c633:6407',
    ]) {
      expect([form, normalizeAddress(form)]).toEqual([form, '198.51.100.7']);
    }
    // not embedded IPv4: unchanged
    expect(normalizeAddress('::1')).toBe('::1');
    expect(normalizeAddress('::')).toBe('::');
    expect(normalizeAddress('64:ff9b:1::c633:6407')).toBe('64:ff9b:1::c633:6407');
    expect(normalizeAddress('2001:db8::ffff:c633:6407')).toBe('2001:db8::ffff:c633:6407');
    const resolver = new ClientAddressResolver(true);
    expect(resolver.resolve('::ffff:c633:6407', undefined)).toBe('198.51.100.7');
    expect(resolver.resolve('64:ff9b::c633:6408', undefined)).toBe('198.51.100.8');
    expect(resolver.resolve('::1', '64:ff9b::c633:6409')).toBe('198.51.100.9');
    // a trusted proxy written in an embedded form is still recognised as trusted
    expect(resolver.resolve('::ffff:7f00:1', '203.0.113.5')).toBe('203.0.113.5');
  });

  it('ignores X-Forwarded-For unless proxies are trusted', () => {
    const none = new ClientAddressResolver(false);
    expect(none.resolve('10.0.0.1', '1.2.3.4')).toBe('10.0.0.1');
    const byList = new ClientAddressResolver(['10.0.0.0/8']);
    expect(byList.resolve('10.0.0.1', 'spoofed, 1.2.3.4, 10.0.0.7')).toBe('1.2.3.4');
    expect(byList.resolve('198.51.100.1', '1.2.3.4')).toBe('198.51.100.1'); // not from our proxy: header ignored
    const twoHops = new ClientAddressResolver(2);
    expect(twoHops.resolve('10.0.0.1', 'spoofed, 1.2.3.4, 10.0.0.7')).toBe('1.2.3.4');
    expect(twoHops.resolve('10.0.0.1', undefined)).toBe('10.0.0.1');
    const v6 = new ClientAddressResolver(true);
    expect(v6.resolve('::1', '2001:db8:aa:bb:1:2:3:4')).toBe('2001:db8:aa:bb::/64');
    expect(v6.resolve('::ffff:127.0.0.1', ['9.9.9.9', '1.2.3.4'])).toBe('1.2.3.4');
  });
});
