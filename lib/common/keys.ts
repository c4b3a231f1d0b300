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
const ESCAPE_SEQUENCES = /%(?:25|7B|7D|3A)/g;
const UNESCAPES: Record<string, string> = { '%25': '%', '%7B': '{', '%7D': '}', '%3A': ':' };
// Bytes of Redis's glob syntax (util.c stringmatchlen).
const STAR = 0x2a;
const QUESTION = 0x3f;
const OPEN = 0x5b;
const CLOSE = 0x5d;
const CARET = 0x5e;
const DASH = 0x2d;
const BACKSLASH = 0x5c;

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

  /**
   * A short key naming `whole`: `head` (a readable start of it, so a pattern of that start still finds the key; not
   * ending in half of a surrogate pair, which a key refuses) + `#` + the hash of `whole`.
   */
  static headAndHash(head: string, whole: string): string {
    const last = head.charCodeAt(head.length - 1);
    const cut = last >= 0xd800 && last <= 0xdbff ? head.slice(0, -1) : head;
    return `${cut}#${KeyBuilder.hash(whole)}`;
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
   * A SCAN MATCH pattern for keys of one feature, over their stored (escaped) form: a superset of the keys the
   * caller's glob matches, which `patternMatcher` then picks exactly. A stored key writes each of `%{}:` as three
   * characters, so a `?` or a `[...]` of the glob (one character) becomes `*` here; literal characters are escaped like
   * stored keys (`products:*` gives `products%3A*`, which is already exact but for `*` ending inside an escape). Our
   * own prefix is glob-escaped, so the pattern can only ever match keys under our prefix.
   */
  pattern(feature: string, userPattern: string): string {
    KeyBuilder.validate(userPattern, 'pattern');
    const literal = (c: string) => ESCAPES[c] ?? KeyBuilder.globEscape(c);
    let match = '';
    for (let i = 0; i < userPattern.length; i++) {
      const c = userPattern[i];
      if (c === '*' || c === '?') match += '*';
      else if (c === '[') {
        match += '*';
        i = classEnd(userPattern, i);
      } else if (c === '\\' && i + 1 < userPattern.length) match += literal(userPattern[++i]);
      else match += literal(c);
    }
    return KeyBuilder.globEscape(this.featurePrefix(feature)) + match;
  }

  /**
   * The exact test of a caller's glob against a key built by `key(feature, part)`: whether the glob matches `part`,
   * the key as the caller gave it, as Redis's MATCH would match it unescaped (byte for byte of its UTF-8: `?` is one
   * byte, as in Redis). With `pattern` (the SCAN superset) it gives a glob the meaning it has on the caller's keys:
   * `a?b` matches `a:b`, `[:]*` does not match `A1`, `*3A` does not match `b:`.
   */
  patternMatcher(feature: string, userPattern: string): (builtKey: string) => boolean {
    KeyBuilder.validate(userPattern, 'pattern');
    const glob = Buffer.from(userPattern);
    const head = this.featurePrefix(feature);
    return (builtKey) => {
      if (!builtKey.startsWith(head)) return false;
      const part = builtKey.slice(head.length).replace(ESCAPE_SEQUENCES, (e) => UNESCAPES[e]);
      return globMatch(glob, 0, Buffer.from(part), 0, { giveUp: false });
    };
  }

  static globEscape(literal: string): string {
    return literal.replace(GLOB_CHARACTERS, (c) => `\\${c}`);
  }
}

/**
 * Where the class opened by the `[` at `open` ends (the index of its `]`, or the last index when it is never closed),
 * read as Redis reads it: `\\x` is a literal x, `x-y` a range (whatever y is, `]` too), and a `]` right after `[` or
 * `[^` closes an empty class. (Redis reads bytes; a character's UTF-8 bytes past its first are never ASCII, so the
 * class ends at the same place.)
 */
function classEnd(glob: string, open: number): number {
  let i = open + 1;
  if (glob[i] === '^') i++;
  for (; i < glob.length; i++) {
    if (glob[i] === '\\' && glob.length - i >= 2) i++;
    else if (glob[i] === ']') return i;
    else if (glob.length - i >= 3 && glob[i + 1] === '-') i += 2;
  }
  return glob.length - 1;
}

/**
 * Redis's glob match (util.c stringmatchlen of Redis 7, case-sensitive), ported byte for byte: `p` the pattern from
 * `pi`, `s` the string from `si`. `state.giveUp` is its skipLongerMatches: once a `*` has tried every rest of the
 * string, no outer `*` needs to try a longer one (the match stays polynomial).
 */
function globMatch(p: Uint8Array, pi: number, s: Uint8Array, si: number, state: { giveUp: boolean }): boolean {
  while (pi < p.length && si < s.length) {
    const c = p[pi];
    if (c === STAR) {
      while (pi + 1 < p.length && p[pi + 1] === STAR) pi++;
      if (pi + 1 === p.length) return true;
      for (; si < s.length; si++) {
        if (globMatch(p, pi + 1, s, si, state)) return true;
        if (state.giveUp) return false;
      }
      state.giveUp = true;
      return false;
    }
    if (c === OPEN) {
      pi++;
      const not = p[pi] === CARET;
      if (not) pi++;
      let match = false;
      for (;;) {
        if (p[pi] === BACKSLASH && p.length - pi >= 2) {
          pi++;
          if (p[pi] === s[si]) match = true;
        } else if (p[pi] === CLOSE) {
          break;
        } else if (pi >= p.length) {
          pi--; // never closed: the class ran to the end of the pattern
          break;
        } else if (p.length - pi >= 3 && p[pi + 1] === DASH) {
          const [from, to] = p[pi] <= p[pi + 2] ? [p[pi], p[pi + 2]] : [p[pi + 2], p[pi]];
          if (s[si] >= from && s[si] <= to) match = true;
          pi += 2;
        } else if (p[pi] === s[si]) {
          match = true;
        }
        pi++;
      }
      if (match === not) return false;
    } else if (c !== QUESTION) {
      if (c === BACKSLASH && p.length - pi >= 2) pi++;
      if (p[pi] !== s[si]) return false;
    }
    si++;
    pi++;
    if (si === s.length) {
      while (p[pi] === STAR) pi++;
      break;
    }
  }
  return pi === p.length && si === s.length;
}
