import 'reflect-metadata';
import { InvalidOptionsError, Throttle } from '../../lib/index.js';
import { ClientAddressResolver } from '../../lib/advanced.js';
import { groupAddress, normalizeAddress } from '../../lib/rate-limit/rate-limit.client-address.js';
import { OptionProblems } from '../../lib/common/option-checks.js';
import { resolveRateLimitOptions } from '../../lib/rate-limit/rate-limit.options.js';

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
