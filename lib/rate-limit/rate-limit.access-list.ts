import { BlockList, isIP } from 'node:net';
import { type OptionProblems, shownValue } from '../common/option-checks.js';
import { groupAddress, normalizeAddress } from './rate-limit.client-address.js';

/**
 * `rateLimit.allowList` / `rateLimit.denyList`: trackers matched before any counting. An entry that is an IP
 * address or a CIDR range matches every tracker that is an address in it (an IPv6 tracker grouped by
 * `ipv6Subnet`, e.g. `2001:db8:1:2::/64`, matches when its network address is in the range); any other entry matches
 * a tracker equal to it (a user id from an overridden getTracker).
 */
export class AccessList {
  private readonly ranges = new BlockList();
  private readonly exact = new Set<string>();
  private hasRanges = false;
  readonly empty: boolean;

  constructor(entries: readonly string[]) {
    for (const entry of entries) {
      const range = parseRange(entry);
      if (range) {
        this.hasRanges = true;
        if (range.bits === undefined) this.ranges.addAddress(range.address, range.type);
        else this.ranges.addSubnet(range.address, range.bits, range.type);
      } else {
        this.exact.add(entry);
      }
    }
    this.empty = entries.length === 0;
  }

  has(tracker: string): boolean {
    if (this.exact.has(tracker)) return true;
    if (!this.hasRanges) return false;
    const address = tracker.split('/')[0];
    const family = isIP(address);
    return family !== 0 && this.ranges.check(address, family === 4 ? 'ipv4' : 'ipv6');
  }
}

/** The allow and deny lists of one @Throttle policy (`allowList` / `denyList` of ThrottleOptions). */
export interface PolicyAccessLists {
  allow: AccessList | undefined;
  deny: AccessList | undefined;
}

const NO_LISTS: PolicyAccessLists = { allow: undefined, deny: undefined };
const policyLists = new WeakMap<object, PolicyAccessLists>();

/** A policy's lists, built on its first request and kept with the policy (its decorator metadata object). */
export function accessListsOf(policy: {
  allowList?: readonly string[];
  denyList?: readonly string[];
}): PolicyAccessLists {
  if (policy.allowList === undefined && policy.denyList === undefined) return NO_LISTS;
  let lists = policyLists.get(policy);
  if (lists === undefined) {
    lists = {
      allow: policy.allowList?.length ? new AccessList(policy.allowList) : undefined,
      deny: policy.denyList?.length ? new AccessList(policy.denyList) : undefined,
    };
    policyLists.set(policy, lists);
  }
  return lists;
}

/** An entry that looks like an address (digits, dots, colons, hex and a `/`) must be a valid address or range. */
const ADDRESS_LIKE = /^[0-9a-fA-F.:]+(\/.*)?$/;

function parseRange(entry: string): { address: string; bits?: number; type: 'ipv4' | 'ipv6' } | undefined {
  const [address, bits] = entry.split('/');
  const family = isIP(address);
  if (family === 0) return undefined;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  if (bits === undefined) return { address, type };
  return { address, bits: Number(bits), type };
}

/** Startup check of a list: strings, and every address-like entry a valid address or CIDR range. */
export function checkAccessList(path: string, value: unknown, problems: OptionProblems): void {
  if (value === undefined) return;
  if (!Array.isArray(value)) {
    problems.add(path, 'must be an array of IP addresses, CIDR ranges or trackers');
    return;
  }
  value.forEach((entry: unknown, i) => {
    if (typeof entry !== 'string' || entry.length === 0) {
      problems.add(`${path}[${i}]`, `must be a non-empty string, got ${shownValue(entry)}`);
      return;
    }
    const looksLikeAddress = ADDRESS_LIKE.test(entry) && (entry.includes('.') || entry.includes(':'));
    if (looksLikeAddress && !isAddressOrCidr(entry)) {
      problems.add(`${path}[${i}]`, `is not a valid IP address or CIDR range: ${JSON.stringify(entry)}`);
    }
  });
}

/** `a.b.c.d`, an IPv6 address, or either with `/bits` (0-32 / 0-128). */
export function isAddressOrCidr(value: string): boolean {
  const [address, bits, extra] = value.split('/');
  if (extra !== undefined) return false;
  const family = isIP(address);
  if (family === 0) return false;
  if (bits === undefined) return true;
  const n = Number(bits);
  return Number.isInteger(n) && n >= 0 && n <= (family === 4 ? 32 : 128) && bits.trim() === bits && bits !== '';
}

/**
 * Start-up check of a list against `ipv6Subnet`: the default tracker of an IPv6 client is its network
 * (`2001:db8:0:0::/64`) and an entry matches when it holds the network's first address, so an IPv6 entry narrower
 * than the grouping matched without a word either none of the clients it names (`2001:db8::bad`, `::1`) or their whole
 * network (`2001:db8::`, `2001:db8::/96`). Refused, naming the network to list instead (an entry that spells an IPv4
 * address in IPv6, `::ffff:198.51.100.7`, is that IPv4 client and is not concerned).
 */
export function checkIpv6Grouping(path: string, value: unknown, ipv6Subnet: number, problems: OptionProblems): void {
  if (!Array.isArray(value) || !Number.isInteger(ipv6Subnet) || ipv6Subnet >= 128) return;
  value.forEach((entry: unknown, i) => {
    if (typeof entry !== 'string' || !isAddressOrCidr(entry)) return;
    const [address, bits] = entry.split('/');
    if (isIP(address) !== 6 || isIP(normalizeAddress(address)) !== 6) return;
    if ((bits === undefined ? 128 : Number(bits)) <= ipv6Subnet) return;
    problems.add(
      `${path}[${i}]`,
      `(${JSON.stringify(entry)}) is narrower than the /${ipv6Subnet} by which IPv6 clients are tracked ` +
        `(rateLimit.ipv6Subnet), and a tracker is matched by its network's first address: the entry would not match ` +
        `the clients it names (or would match their whole /${ipv6Subnet}). List the network ` +
        `(${groupAddress(address, ipv6Subnet)}), or set ipv6Subnet: 128 to track each IPv6 address on its own`,
    );
  });
}
