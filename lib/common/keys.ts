import { createHash } from 'node:crypto';
import { InvalidKeyError } from './errors.js';
import { hasLoneSurrogate } from './unicode.js';

/**
 * Longest caller-supplied key part we accept; Redis allows 512 MB keys, but a 1 KiB key is already a bug or an attack.
 */
export const MAX_KEY_BYTES = 1024;

// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/;
const GLOB_CHARACTERS = /[*?[\]\\]/g;
const ESCAPED_CHARACTERS = /[%{}:]/;
const ESCAPED_CHARACTERS_ALL = /[%{}:]/g;
const ESCAPES: Record<string, string> = { '%': '%25', '{': '%7B', '}': '%7D', ':': '%3A' };

/** The default `keyPrefix`: every key the toolkit writes starts with it. */
export const DEFAULT_KEY_PREFIX = 'rtk:';

/**
 * The one table of feature names: each is the segment after `keyPrefix` in every key (and pub/sub channel) the feature
 * writes, so `SCAN MATCH rtk:cache:*` finds only the cache's keys. Nothing else in lib/ spells these.
 */
export const FEATURES = {
  cache: 'cache',
  rateLimit: 'rl',
  session: 'sess',
  /** The per-user index of sessions (`rtk:sess:user:{<userId>}`). */
  sessionUserIndex: 'sess:user',
  lock: 'lock',
  /** Pub/sub channels (`rtk:ps:<channel>`). */
  pubsub: 'ps',
  /** Durable pub/sub streams, one per user (`rtk:ps:stream:{<userId>}`). */
  pubsubStream: 'ps:stream',
  /** The live dashboard (`nestjs-redis-toolkit/dashboard`): its frames channel `__rtk:dash:frames`. */
  dashboard: 'dash',
} as const;
export type Feature = (typeof FEATURES)[keyof typeof FEATURES];

/**
 * The toolkit's own pub/sub channel names (e.g. the cache's L1 invalidations) start with this, inside the pub/sub
 * namespace; the notifications gateway refuses and never relays them.
 */
const INTERNAL_CHANNEL_PREFIX = '__rtk:';

/**
 * Builds every Redis key the toolkit writes: `<prefix><feature>:<parts>`.
 *
 * Caller-supplied parts are escaped so that `{` and `}` can never form or break out of a hash tag: two different
 * inputs always give two different keys, and the hash tags we add are the only ones Redis sees.
 */
export class KeyBuilder {
  constructor(readonly prefix: string) {}

  /**
   * Throws InvalidKeyError unless `value` is a non-empty string of at most 1 KiB, without control characters or lone
   * surrogates.
   */
  static validate(value: unknown, what = 'key'): string {
    if (typeof value !== 'string') throw new InvalidKeyError(`${what} must be a string, got ${typeof value}`);
    if (value.length === 0) throw new InvalidKeyError(`${what} must not be empty`);
    if (Buffer.byteLength(value) > MAX_KEY_BYTES) {
      throw new InvalidKeyError(`${what} is longer than ${MAX_KEY_BYTES} bytes (${Buffer.byteLength(value)})`);
    }
    if (CONTROL_CHARACTERS.test(value)) throw new InvalidKeyError(`${what} must not contain control characters`);
    // 'x\uD800y' and 'x\uFFFDy' are different strings but the same Redis key: one caller would read another's entry.
    if (hasLoneSurrogate(value)) throw new InvalidKeyError(`${what} must be well-formed Unicode (a lone surrogate)`);
    return value;
  }

  /**
   * Makes a part safe inside a key: `%`, `{`, `}` and `:` are percent-encoded. Injective, so no two inputs collide:
   * `key(f, 'a:b')` and `key(f, 'a', 'b')` differ, and a caller's key can never land in a feature's own sub-space.
   */
  static escape(part: string): string {
    return ESCAPED_CHARACTERS.test(part) ? part.replace(ESCAPED_CHARACTERS_ALL, (c) => ESCAPES[c]) : part;
  }

  /**
   * A short, fixed-length stand-in for an identifier of any length or alphabet (e.g. a client IP or a user-made key).
   */
  static hash(value: string): string {
    // UTF-16 code units, not UTF-8: every JS string (lone surrogates included) hashes differently from every other.
    return createHash('sha256').update(value, 'utf16le').digest('base64url').slice(0, 22);
  }

  /** `rtk:cache:` — everything one feature writes starts with this. */
  featurePrefix(feature: string): string {
    return `${this.prefix}${feature}:`;
  }

  /** `rtk:<feature>:{` — every key `tagged(feature, ...)` builds starts with this. */
  tagHead(feature: string): string {
    return `${this.featurePrefix(feature)}{`;
  }

  /** `rtk:<feature>:<part>:<part>` with each caller part validated and escaped. */
  key(feature: string, ...parts: string[]): string {
    return this.featurePrefix(feature) + parts.map((p) => KeyBuilder.escape(KeyBuilder.validate(p))).join(':');
  }

  /**
   * `rtk:<feature>:{<tag>}<suffix>` — keys built with the same tag share a hash slot, so one Lua script may touch them
   * together on a Redis Cluster. `suffix` is ours (e.g. `:fence`), not the caller's, and is not escaped.
   */
  tagged(feature: string, tag: string, suffix = ''): string {
    return `${this.tagHead(feature)}${KeyBuilder.escape(KeyBuilder.validate(tag))}}${suffix}`;
  }

  /**
   * `rtk:<feature>:{<id>}<suffix>` for an id the caller has already checked (e.g. a base64url session id): built
   * without validating or escaping it again, on the hot path.
   */
  taggedTrusted(feature: string, id: string, suffix = ''): string {
    return `${this.tagHead(feature)}${id}}${suffix}`;
  }

  /**
   * A companion of a key built by `key(feature, ...)`: `rtk:<feature>:{<its parts>}<suffix>` (e.g. the cache's load
   * lock `rtk:cache:{products:1}:lock`). Its braces keep it apart from every key a caller can make.
   */
  companion(feature: string, builtKey: string, suffix: string): string {
    return `${this.tagHead(feature)}${builtKey.slice(this.featurePrefix(feature).length)}}${suffix}`;
  }

  /** `<channel>` under the feature's namespace for pub/sub (`rtk:ps:<channel>`); channel names are not escaped. */
  channel(channel: string): string {
    return this.featurePrefix(FEATURES.pubsub) + channel;
  }

  /** `__rtk:<feature>:<name>`: one of the toolkit's own pub/sub channels (given to PubSubService like any channel). */
  static internalChannel(feature: string, name: string): string {
    return `${INTERNAL_CHANNEL_PREFIX}${feature}:${name}`;
  }

  /** True for the toolkit's own channels: never subscribed to or relayed to a client. */
  static isInternalChannel(channel: string): boolean {
    return channel.startsWith(INTERNAL_CHANNEL_PREFIX);
  }

  /**
   * A SCAN MATCH pattern for keys of one feature. The caller's glob is kept (`*`, `?`, `[...]`), its `%{}:` are escaped
   * like stored keys (so `products:*` matches what `key(f, 'products:1')` wrote), and our own prefix is glob-escaped,
   * so the pattern can only ever match keys under our prefix.
   */
  pattern(feature: string, userPattern: string): string {
    KeyBuilder.validate(userPattern, 'pattern');
    return KeyBuilder.globEscape(this.featurePrefix(feature)) + KeyBuilder.escape(userPattern);
  }

  static globEscape(literal: string): string {
    return literal.replace(GLOB_CHARACTERS, (c) => `\\${c}`);
  }
}
