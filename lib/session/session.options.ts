import { InvalidOptionsError } from '../common/errors.js';
import { kindOf, type OptionProblems, refuseUnknown } from '../common/option-checks.js';
import { touchReuseOf, type TouchReuse } from './session.recent-touches.js';
import type { CreateSessionOptions } from './session.types.js';
import type { RedisClock } from '../common/redis-clock.js';
import type { SessionSizeBound } from './session.size-bound.js';

/** Injection token of ResolvedSessionOptions (`session` of forRoot, defaults filled in). */
export const SESSION_OPTIONS = Symbol('SESSION_OPTIONS');

export interface SessionCookieOptions {
  /** Cookie name. Default `rtk.sid`. */
  name?: string;
  /** Secret(s) used to sign the cookie; the first signs, all verify (rotation). Required by SessionMiddleware. */
  secret?: string | string[];
  /** Default true. */
  httpOnly?: boolean;
  /** `'auto'`: secure when the request came over HTTPS (`req.secure`). Default: true when NODE_ENV is `production`. */
  secure?: boolean | 'auto';
  /** Default `lax`. */
  sameSite?: 'lax' | 'strict' | 'none';
  /** Default `/`. */
  path?: string;
  domain?: string;
  /**
   * Cookie lifetime in ms. Default: none, and the cookie's `Expires` follows the session's `expiresAt` (re-sent on
   * every request while `rolling`), so the browser drops the cookie when the server drops the session.
   */
  maxAge?: number;
}

export interface SessionOptions {
  /** Idle ttl in ms. Default 24 h. */
  ttl?: number;
  /** Touching a session (get, update) extends its ttl. Default true. */
  rolling?: boolean;
  /**
   * With `rolling`: a get within this many ms of this process's last extension of the same session reads it without
   * extending it again (a plain GET, batched as an MGET), as connect-mongo's `touchAfter`. The idle expiry then lags
   * by up to this much: a session read at time t lives at least until t + ttl - touchAfter. At most half of `ttl`.
   * Default: 1 s, and less than a tenth of the session's ttl (the precision of connect-redis's expiry in whole
   * seconds; the requests of one page load cost one extension); 0: every get extends, to the ms.
   */
  touchAfter?: number;
  /** Absolute maximum lifetime in ms, whatever the activity. Default 30 days. */
  maxAgeMs?: number;
  /** How long a destroyed session id stays blocked against late writes, ms. Default 60 s. */
  tombstoneMs?: number;
  /**
   * Largest session in bytes (its stored JSON): a larger create/update throws SessionTooLargeError and writes
   * nothing. Every write re-encodes the whole session in Redis, so a huge one blocks Redis. Default 1 MiB (1_048_576),
   * at most 64 MiB. Lowered to what the server's `client-output-buffer-limit normal` lets one reply carry (read at
   * start: 4/5 of its hard limit less 128 bytes), as a read of a larger session makes Redis close the connection; a
   * value given above that is warned about at start. See docs/session.md, "Size of a session".
   */
  maxSize?: number;
  /**
   * `update` appends the fields it changes to the stored session (APPEND, in one script call per tick) instead of
   * writing the whole merged session with a compare-and-set; every 16 changes, or when the changes outgrow the session,
   * it writes it whole again. About half the Redis CPU per update (docs/session.md). Default false in this version: a
   * version before this one reads a session with changes appended as no session, and deletes it, so turn it on once
   * every instance of the app runs this version or a later one.
   */
  appendUpdates?: boolean;
  cookie?: SessionCookieOptions;
}

/** What SessionRecords takes of the session options (SessionService passes its resolved ones). */
export interface SessionRecordsOptions {
  /** Largest stored session, bytes (default 1 MiB), when `size` is not given. */
  maxSize?: number;
  /** The bound on a session's size, lowered by the server's reply limit (default: `maxSize` alone). */
  size?: SessionSizeBound;
  /** How long a touch is reused by this process's later reads of the session (none: every read touches). */
  touchReuse?: TouchReuse;
  /** `session.appendUpdates`: an update appends its change (see update). */
  appendUpdates?: boolean;
  /** Redis's clock (sessionClock), which touching reads judge the deadline by (default: this process's). */
  redisClock?: RedisClock;
}

/** Default and hard maximum of `session.maxSize`, bytes. */
export const DEFAULT_SESSION_MAX_SIZE = 1_048_576;

/** Defaults shared by the module's session options and RedisSessionStore (one place, so the two cannot drift). */
export const SESSION_DEFAULTS = {
  ttl: 86_400_000,
  maxAgeMs: 30 * 86_400_000,
  tombstoneMs: 60_000,
} as const;
export const SESSION_MAX_SIZE_LIMIT = 64 * 1_048_576;

export interface ResolvedSessionCookieOptions {
  name: string;
  secrets: string[];
  httpOnly: boolean;
  secure: boolean | 'auto';
  sameSite: 'lax' | 'strict' | 'none';
  path: string;
  domain: string | undefined;
  maxAge: number | undefined;
}

export interface ResolvedSessionOptions {
  ttl: number;
  rolling: boolean;
  /** From `touchAfter`: how long a get reuses this process's last extension (undefined: every get extends). */
  touchReuse: TouchReuse | undefined;
  maxAgeMs: number;
  tombstoneMs: number;
  maxSize: number;
  /** Whether `maxSize` was given (one past the server's reply limit is warned about), not its default. */
  maxSizeGiven: boolean;
  appendUpdates: boolean;
  cookie: ResolvedSessionCookieOptions;
}

/**
 * A duration rounded up to whole ms: the session scripts write deadlines and expiries (PEXPIREAT, PXAT) that Redis
 * refuses with a fraction (a maxAgeMs of 120000.25 failed every create). A value that is not a number is left for the
 * option check to name.
 */
function wholeMs<T>(value: T): T {
  return (typeof value === 'number' ? Math.ceil(value) : value) as T;
}

/**
 * Names each bad entry of `session.cookie.secret` (an unset environment variable in a rotation list is the usual one)
 * and what to do; never the secret itself.
 */
function checkSecrets(secret: unknown, problems: OptionProblems): void {
  if (secret === undefined) return;
  if (!Array.isArray(secret)) {
    if (typeof secret !== 'string') {
      problems.add('session.cookie.secret', `must be a string or an array of strings, got ${kindOf(secret)}`);
    } else if (secret === '') problems.add('session.cookie.secret', 'is an empty string');
    return;
  }
  if (secret.length === 0) {
    problems.add('session.cookie.secret', 'is an empty array: give at least the current secret (the first signs)');
  }
  secret.forEach((entry: unknown, i) => {
    const path = `session.cookie.secret[${i}]`;
    const remedy =
      i === 0
        ? 'the first entry signs every cookie and is required (is its environment variable set?)'
        : 'leave unset old secrets out of the list (they only verify cookies; docs/session.md, Configure)';
    if (entry === undefined || entry === null) problems.add(path, `is ${entry}: ${remedy}`);
    else if (typeof entry !== 'string') problems.add(path, `must be a string, got ${kindOf(entry)}`);
    else if (entry === '') problems.add(path, `is an empty string: ${remedy}`);
  });
}

/** HMAC-SHA256's key size in bytes: a cookie secret shorter than this many characters is warned about at start. */
export const MIN_COOKIE_SECRET_LENGTH = 32;

/**
 * The startup warning for cookie secrets shorter than MIN_COOKIE_SECRET_LENGTH (one line naming each by its length,
 * and its index when there are several; never its value), or undefined. A warning, not an error: development setups
 * use short secrets.
 */
export function shortSecretWarning(secrets: readonly string[]): string | undefined {
  const short = secrets.flatMap((secret, i) =>
    secret.length < MIN_COOKIE_SECRET_LENGTH
      ? [`session.cookie.secret${secrets.length > 1 ? `[${i}]` : ''} is ${secret.length} characters`]
      : [],
  );
  if (short.length === 0) return undefined;
  return (
    `${short.join(', ')}: cookies are signed with HMAC-SHA256, whose key is ${MIN_COOKIE_SECRET_LENGTH} bytes; a ` +
    `shorter secret can be brute-forced offline from one signed cookie. Use at least ${MIN_COOKIE_SECRET_LENGTH} ` +
    'random characters (e.g. openssl rand -base64 48)'
  );
}

/**
 * What `path`, `domain` and a prefixed `name` must be for the cookie to be sent as configured. Both are written into
 * Set-Cookie as they are: a ';' would add an attribute of its own, a line break or a character outside Latin-1 makes
 * Node throw on every write (a 500 at each login), and a path not starting with '/' is replaced by the browser's
 * default. A `__Host-` / `__Secure-` name (browsers match the prefix in any case) is dropped by browsers without
 * Secure, and a `__Host-` one with a Domain or a Path other than '/': nobody could log in, without a word.
 */
function checkCookieAttributes(c: SessionCookieOptions, problems: OptionProblems): void {
  const path: unknown = c.path;
  if (typeof path === 'string' && path !== '' && !/^\/[\x20-\x3a\x3c-\x7e]*$/.test(path)) {
    problems.add(
      'session.cookie.path',
      "must start with '/' and hold only printable ASCII without ';' (it is sent in Set-Cookie as is), got " +
        JSON.stringify(path),
    );
  }
  const domain: unknown = c.domain;
  if (typeof domain === 'string' && domain !== '' && !/^\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(domain)) {
    problems.add(
      'session.cookie.domain',
      `must be a host name (letters, digits, '-' and '.'; punycode for others), got ${JSON.stringify(domain)}`,
    );
  }
  const name: unknown = c.name;
  if (typeof name !== 'string') return;
  const prefix = /^__host-/i.test(name) ? '__Host-' : /^__secure-/i.test(name) ? '__Secure-' : undefined;
  if (prefix === undefined) return;
  const secure = c.secure ?? process.env.NODE_ENV === 'production';
  if (secure === false) {
    problems.add(
      'session.cookie.secure',
      `must be true or 'auto' for a cookie named ${name}: browsers drop a ${prefix} cookie sent without Secure` +
        (c.secure === undefined ? ' (the default is true only when NODE_ENV is production)' : ''),
    );
  }
  if (prefix !== '__Host-') return;
  if (c.path !== undefined && c.path !== '/') {
    problems.add(
      'session.cookie.path',
      `must be '/' for a cookie named ${name} (browsers drop a __Host- cookie otherwise)`,
    );
  }
  if (c.domain !== undefined) {
    problems.add(
      'session.cookie.domain',
      `must be unset for a cookie named ${name} (browsers drop a __Host- cookie with a Domain)`,
    );
  }
}

export function resolveSessionOptions(
  raw: SessionOptions | undefined,
  problems: OptionProblems,
): ResolvedSessionOptions {
  const o = raw ?? {};
  const c: SessionCookieOptions = (o.cookie ?? {}) as SessionCookieOptions;
  if (problems.object('session', raw)) {
    problems.duration('session.ttl', o.ttl);
    problems.duration('session.maxAgeMs', o.maxAgeMs);
    problems.duration('session.tombstoneMs', o.tombstoneMs);
    problems.boolean('session.rolling', o.rolling);
    problems.duration('session.touchAfter', o.touchAfter, { allowZero: true });
    problems.integer('session.maxSize', o.maxSize, 1_024, SESSION_MAX_SIZE_LIMIT);
    problems.boolean('session.appendUpdates', o.appendUpdates);
    if (problems.object('session.cookie', o.cookie)) {
      problems.string('session.cookie.name', c.name);
      if (c.name !== undefined && typeof c.name === 'string' && !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(c.name)) {
        problems.add(
          'session.cookie.name',
          `must be a valid cookie name (RFC 6265 token), got ${JSON.stringify(c.name)}`,
        );
      }
      checkSecrets(c.secret, problems);
      problems.boolean('session.cookie.httpOnly', c.httpOnly);
      if (c.secure !== undefined && typeof c.secure !== 'boolean' && c.secure !== 'auto') {
        problems.add('session.cookie.secure', `must be true, false or 'auto', got ${JSON.stringify(c.secure)}`);
      }
      problems.oneOf('session.cookie.sameSite', c.sameSite, ['lax', 'strict', 'none'] as const);
      if (c.sameSite === 'none' && c.secure === false) {
        problems.add(
          'session.cookie.sameSite',
          "'none' needs secure: true or 'auto' (browsers drop SameSite=None cookies without Secure)",
        );
      }
      problems.string('session.cookie.path', c.path);
      problems.string('session.cookie.domain', c.domain);
      checkCookieAttributes(c, problems);
      problems.duration('session.cookie.maxAge', c.maxAge);
    }
  }
  const ttl = o.ttl ?? SESSION_DEFAULTS.ttl;
  const maxAgeMs = o.maxAgeMs ?? SESSION_DEFAULTS.maxAgeMs;
  if (typeof ttl === 'number' && typeof maxAgeMs === 'number' && maxAgeMs < ttl && o.maxAgeMs !== undefined) {
    problems.add('session.maxAgeMs', `must not be shorter than session.ttl (${ttl} ms), got ${maxAgeMs}`);
  }
  const touchAfter = o.touchAfter;
  // only between two valid durations (a bad one is already named above)
  if (typeof ttl === 'number' && ttl > 0 && typeof touchAfter === 'number' && touchAfter > 0 && touchAfter * 2 > ttl) {
    problems.add('session.touchAfter', `must be at most half of session.ttl (${ttl} ms), got ${touchAfter}`);
  }
  if (o.rolling === false && typeof touchAfter === 'number' && touchAfter > 0) {
    problems.add('session.touchAfter', 'has no effect with rolling: false (a get never extends the ttl)');
  }
  return {
    ttl: wholeMs(ttl),
    rolling: o.rolling ?? true,
    touchReuse: touchReuseOf(touchAfter, o.rolling !== false),
    maxAgeMs: wholeMs(maxAgeMs),
    tombstoneMs: wholeMs(o.tombstoneMs ?? SESSION_DEFAULTS.tombstoneMs),
    maxSize: o.maxSize ?? DEFAULT_SESSION_MAX_SIZE,
    maxSizeGiven: o.maxSize !== undefined,
    appendUpdates: o.appendUpdates ?? false,
    cookie: {
      name: c.name ?? 'rtk.sid',
      secrets: c.secret === undefined ? [] : Array.isArray(c.secret) ? [...c.secret] : [c.secret],
      httpOnly: c.httpOnly ?? true,
      secure: c.secure ?? process.env.NODE_ENV === 'production',
      sameSite: c.sameSite ?? 'lax',
      path: c.path ?? '/',
      domain: c.domain,
      maxAge: c.maxAge,
    },
  };
}

/** The options `SessionService.create` takes: a misspelled one (`ttlMs`, `maxAge`) would leave the default ttl. */
const CREATE_OPTIONS: ReadonlySet<string> = new Set(
  Object.keys({ ttl: true } satisfies Record<keyof CreateSessionOptions, true>),
);

/** Refuses `SessionService.create` options that are not an object, or carry a key it does not know. */
export function checkCreateOptions(options: unknown): void {
  if (options === null || typeof options !== 'object' || Array.isArray(options))
    throw new InvalidOptionsError(`session.create: options must be an object ({ ttl? }), got ${kindOf(options)}`);
  refuseUnknown(options, CREATE_OPTIONS, 'session.create');
}
