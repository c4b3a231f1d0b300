import { FEATURES, KeyBuilder } from '../common/keys.js';
import type { RateLimitAlgorithm } from './rate-limit.options.js';

export const ALGORITHM_CODES: Record<RateLimitAlgorithm, string> = {
  'sliding-window': 's',
  'fixed-window': 'f',
  'token-bucket': 't',
};

/**
 * A policy as consume.lua reads it: its six figures in one ARGV value, `algorithm:limit:ttl:cost:burst:blockDuration`
 * (one value instead of six: fewer strings for ioredis to write, Redis to parse and Lua to intern, per decision).
 */
export function policySpec(p: {
  algorithm: RateLimitAlgorithm;
  limit: number;
  ttl: number;
  cost: number;
  burst: number;
  blockDuration: number;
}): string {
  return `${ALGORITHM_CODES[p.algorithm]}:${p.limit}:${p.ttl}:${p.cost}:${p.burst}:${p.blockDuration}`;
}

/** A counter's block key (blockDuration, block()): the counter key + this, so it shares the counter's hash slot. */
export const BLOCK_SUFFIX = ':b';

/**
 * The Redis keys of rate-limit counters: `<prefix>rl:{hash(key)}:hash(scope):<algorithm>`, fixed length whatever the
 * input; every counter of one key shares its hash tag (one slot on a cluster).
 */
export class RateLimitKeys {
  /** `<prefix>rl:{` — every counter key starts with it. */
  private readonly tagPrefix: string;
  /** Recent identifier → hash: hot keys (an IP, a route) are hashed once, not on every request. */
  private readonly hashes = new Map<string, string>();

  constructor(keys: KeyBuilder) {
    this.tagPrefix = keys.tagHead(FEATURES.rateLimit);
  }

  counter(key: string, scope: string, algorithm: RateLimitAlgorithm): string {
    return `${this.tagOf(key)}:${this.hash(scope)}:${ALGORITHM_CODES[algorithm]}`;
  }

  /** `<prefix>rl:{hash(key)}` (a hash is base64url: nothing in it needs escaping). */
  tagOf(key: string): string {
    return `${this.tagPrefix}${this.hash(key)}}`;
  }

  hash(value: string): string {
    let hashed = this.hashes.get(value);
    if (hashed === undefined) {
      hashed = KeyBuilder.hash(value);
      if (value.length <= 512) {
        if (this.hashes.size >= 10_000) this.hashes.clear();
        this.hashes.set(value, hashed);
      }
    }
    return hashed;
  }
}

/**
 * Drops one counter from an in-process store of counters (the block cache's, insurance's), or with `isPrefix` every
 * counter starting with it (a key's tag: `reset(key)` of every policy of that key).
 */
export function dropCounters(
  store: { delete(key: string): unknown; keys(): Iterable<string> },
  counter: string,
  isPrefix: boolean,
): void {
  if (!isPrefix) {
    store.delete(counter);
    return;
  }
  for (const k of [...store.keys()]) if (k.startsWith(counter)) store.delete(k);
}
