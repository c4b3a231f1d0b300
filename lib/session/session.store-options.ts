import type { Cluster, Redis } from 'ioredis';
import { DEFAULT_KEY_PREFIX } from '../common/keys.js';
import { OptionProblems, type OptionShape } from '../common/option-checks.js';
import type { Serializer } from '../common/serializer.js';
import { SESSION_MAX_SIZE_LIMIT } from './session.options.js';
import type { StoreSessionData } from './session.store-base.js';

/**
 * The store's `ttl` as a function of the session, in ms. Declared as a method so an app may type its parameter with
 * its own (augmented) express-session `SessionData`, as with connect-redis.
 */
export type StoreTtlFunction = { ttl(session: StoreSessionData): number }['ttl'];

/** The options RedisSessionStore accepts; anything else is an error naming it (e.g. a connect-redis option we lack). */
export const SESSION_STORE_OPTION_KEYS: OptionShape = {
  client: true,
  prefix: true,
  ttl: true,
  maxAgeMs: true,
  tombstoneMs: true,
  serializer: true,
  userIdField: true,
  touchOnGet: true,
  touchAfter: true,
  maxSize: true,
  disableTouch: true,
  disableTTL: true,
  scanCount: true,
};

export interface RedisSessionStoreOptions {
  /** The ioredis client (Redis or Cluster), e.g. `app.get(REDIS_CLIENT)`. Stays yours: the store never quits it. */
  client: Redis | Cluster;
  /** The toolkit's `keyPrefix`; keys are `<prefix>sess:{<sid>}`, the same as SessionService's. Default `rtk:`. */
  prefix?: string;
  /**
   * Idle ttl in **milliseconds** (connect-redis takes seconds) when the session cookie has no expiry, or a function of
   * the session returning it (used for every session, as in connect-redis; a result that is not > 0 means expired,
   * one past 100 years, Infinity included, is 100 years: the session lives until maxAgeMs). Default 24 h. A number
   * below 1,000 gives a startup warning: it looks like seconds.
   */
  ttl?: number | StoreTtlFunction;
  /** connect-redis `disableTouch`: `touch` sends nothing and `get` is a plain read, so the ttl is set only by `set`. */
  disableTouch?: boolean;
  /** connect-redis `disableTTL`: keys get no Redis expiry (nor does `touch` set one); `maxAgeMs` still bounds reads. */
  disableTTL?: boolean;
  /** connect-redis `scanCount`: the COUNT of the SCANs of `all`, `ids`, `length` and `clear`. Default 500. */
  scanCount?: number;
  /** Absolute maximum lifetime in ms, whatever the activity. Default 30 days. */
  maxAgeMs?: number;
  /** How long a destroyed id stays blocked against late `set`s, ms. Default 60 s. */
  tombstoneMs?: number;
  /** Serializer for session fields. Default: JSON with Dates. */
  serializer?: Serializer;
  /**
   * The session field holding the user id, indexed for SessionService.listForUser / destroyAllForUser. Default
   * `userId`.
   */
  userIdField?: string;
  /**
   * `get` extends the ttl in the same round trip, so `touch` (called by express-session at the end of every unmodified
   * request) has nothing left to do and costs no round trip. Default true. `false`: `get` is a plain read and
   * `touch` extends the ttl.
   */
  touchOnGet?: boolean;
  /**
   * With `touchOnGet`: a `get` within this many ms of this process's last extension of the same session (with the
   * same ttl) reads it without extending it again (a plain GET, batched as an MGET), as connect-mongo's `touchAfter`
   * (seconds there, ms here). The idle expiry lags by up to this much, and never by more than half the session's
   * ttl. Default: 1 s, and less than a tenth of the session's ttl (the precision of connect-redis's expiry in whole
   * seconds); 0: every `get` extends, to the ms.
   */
  touchAfter?: number;
  /**
   * Largest session in bytes (its stored JSON); a larger `set` fails with SessionTooLargeError (HTTP 413). Default 1
   * MiB.
   */
  maxSize?: number;
}

/** Throws InvalidOptionsError naming every wrong RedisSessionStore option at once. */
export function checkStoreOptions(options: RedisSessionStoreOptions): void {
  const problems = new OptionProblems('RedisSessionStore');
  problems.unknownKeys('', options, SESSION_STORE_OPTION_KEYS);
  if (!options || typeof options.client?.defineCommand !== 'function') {
    problems.add('RedisSessionStore client', 'must be an ioredis Redis or Cluster instance');
  } else checkStoreClient(options.client, problems);
  problems.string('RedisSessionStore prefix', options?.prefix, { allowEmpty: true });
  if (typeof options?.ttl === 'function') problems.func('RedisSessionStore ttl', options.ttl);
  else problems.duration('RedisSessionStore ttl', options?.ttl);
  const serializer = options?.serializer as Partial<Serializer> & { parse?: unknown; stringify?: unknown };
  if (
    serializer !== undefined &&
    (typeof serializer?.serialize !== 'function' || typeof serializer.deserialize !== 'function')
  ) {
    problems.add(
      'RedisSessionStore serializer',
      typeof serializer?.parse === 'function'
        ? 'must be { serialize, deserialize } ' +
            "(connect-redis' { stringify, parse } serializes the whole session; ours each field)"
        : 'must have serialize and deserialize functions',
    );
  }
  problems.boolean('RedisSessionStore disableTouch', options?.disableTouch);
  problems.boolean('RedisSessionStore disableTTL', options?.disableTTL);
  problems.integer('RedisSessionStore scanCount', options?.scanCount, 1, 1_000_000);
  problems.duration('RedisSessionStore maxAgeMs', options?.maxAgeMs);
  problems.duration('RedisSessionStore tombstoneMs', options?.tombstoneMs);
  problems.string('RedisSessionStore userIdField', options?.userIdField);
  problems.boolean('RedisSessionStore touchOnGet', options?.touchOnGet);
  problems.duration('RedisSessionStore touchAfter', options?.touchAfter, { allowZero: true });
  // get is a plain read then: touchAfter would do nothing, which is not what was asked for
  const getDoesNotTouch = plainGetOption(options);
  if (getDoesNotTouch && typeof options.touchAfter === 'number' && options.touchAfter > 0) {
    problems.add('RedisSessionStore touchAfter', `has no effect with ${getDoesNotTouch} (get does not extend the ttl)`);
  }
  problems.integer('RedisSessionStore maxSize', options?.maxSize, 1_024, SESSION_MAX_SIZE_LIMIT);
  problems.throwIfAny();
}

/** What the store's client may carry of the ioredis options checkStoreClient refuses. */
interface ReplyShaping {
  keyPrefix?: unknown;
  stringNumbers?: unknown;
  replyMapping?: unknown;
  redisOptions?: ReplyShaping;
}

/**
 * The ioredis client options that break the store without an error, refused as the module refuses them on its own
 * `{ client }` (lib/connection/client-reply-options.ts), with the store's own remedy: `keyPrefix` (ioredis prefixes the
 * keys of its own commands, not those of the store's Lua scripts: a session just set read back as null),
 * `stringNumbers` (a write's expiry came back as a string, taken for a changed session: every set ran three
 * compare-and-sets, then the Lua fallback) and `replyMapping: 'resp3'` (replies in shapes the store does not read). A
 * Cluster client's options and its redisOptions are both looked at (ioredis copies one keyPrefix to the other).
 */
function checkStoreClient(client: Redis | Cluster, problems: OptionProblems): void {
  const own = client.options as ReplyShaping | undefined;
  if (own === null || typeof own !== 'object') return; // not made by ioredis's constructor: nothing to look at
  const seen = new Set<string>();
  for (const options of [own, own.redisOptions]) {
    if (options === null || typeof options !== 'object') continue;
    const prefix = options.keyPrefix;
    const found: [string, string][] = [];
    if (typeof prefix === 'string' && prefix !== '')
      found.push([
        'keyPrefix',
        // (the quoted prefix is joined with text, not glued in a template: test/foundation/key-prefixes.spec.ts)
        [
          JSON.stringify(prefix),
          ": ioredis adds it to the keys of its own commands but not to those of the store's Lua scripts, so the " +
            'store would miss its own sessions (one just set read back as null). Give the store a client without it ' +
            'and the prefix as its prefix option (e.g. prefix: ',
          JSON.stringify(prefix.concat(DEFAULT_KEY_PREFIX)),
          ')',
        ].join(''),
      ]);
    if (options.stringNumbers === true)
      found.push([
        'stringNumbers',
        'true: integer replies would arrive as strings where the store reads numbers (a write taken for a lost ' +
          'race: every set retried, then merged in Lua). Give the store a client without it',
      ]);
    if (options.replyMapping === 'resp3')
      found.push([
        'replyMapping',
        '"resp3": map replies would arrive as objects and doubles as numbers where the store reads RESP2 shapes. ' +
          'Give the store a client with the default ("legacy")',
      ]);
    for (const [name, why] of found) {
      if (seen.has(name)) continue;
      seen.add(name);
      problems.add('RedisSessionStore client', `was created with ${name} ${why}`);
    }
  }
}

/**
 * The option that makes the store's `get` a plain read, without extending the ttl (connect-redis' get is a plain GET:
 * with touch or ttl disabled, ours is too), or undefined when `get` extends it.
 */
export function plainGetOption(
  options: Pick<RedisSessionStoreOptions, 'disableTouch' | 'disableTTL' | 'touchOnGet'> | undefined,
): 'disableTouch' | 'disableTTL' | 'touchOnGet: false' | undefined {
  if (options?.disableTouch) return 'disableTouch';
  if (options?.disableTTL) return 'disableTTL';
  if (options?.touchOnGet === false) return 'touchOnGet: false';
  return undefined;
}
