import type { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { InvalidKeyError, InvalidOptionsError, MissingPeerError } from '../common/errors.js';
import { classifyRedisError } from '../common/failure-policy.js';
import { kindOf } from '../common/option-checks.js';
import { isNotFound, missingPeersMessage, peerRequire } from '../common/optional-peers.js';

/*
 * express-session is an optional peer, so nothing the root entry declares may import its types: without the package
 * (and `skipLibCheck: false`) the app's build failed on our .d.ts, and with `skipLibCheck: true` RedisSessionStore's
 * base class and options became `any`. These are the shapes the store reads and writes, written to be supertypes of
 * express-session's own (@types/express-session 1.18–1.19): an app's `session({ store: new RedisSessionStore(...) })`
 * type-checks against them, its SessionData augmentations included (test/session/session.store-types.spec.ts).
 */

/** The session cookie as express-session stores it (its `Cookie`, as JSON). */
export interface StoreSessionCookie {
  originalMaxAge: number | null;
  maxAge?: number | undefined;
  /** A Date from express-session; an ISO string when read back from Redis (express-session revives it). */
  expires?: Date | string | null | undefined;
  signed?: boolean | undefined;
  httpOnly?: boolean | undefined;
  path?: string | undefined;
  domain?: string | undefined;
  secure?: boolean | 'auto' | undefined;
  sameSite?: boolean | 'lax' | 'strict' | 'none' | undefined;
  partitioned?: boolean | undefined;
  priority?: 'low' | 'medium' | 'high' | undefined;
}

/**
 * A session as express-session hands it to a store (its `SessionData`): the cookie, then the app's own fields. No
 * index signature: express-session's SessionData is an interface, and an interface is not assignable to one.
 */
export interface StoreSessionData {
  cookie: StoreSessionCookie;
}

/** A session as the store reads it back: the cookie and the app's fields, as stored. */
export type StoredSession = StoreSessionData & Record<string, unknown>;

/** A store callback: an error, or null and the value. */
export type StoreCallback<T> = (err: unknown, value?: T) => void;

/**
 * What RedisSessionStore inherits from express-session's `Store` (an EventEmitter; `regenerate`, `load` and
 * `createSession`, which express-session calls itself). A session handed back to a callback is the app's SessionData
 * (augmented with its own fields, some required): the caller names it (`T`, express-session's own when it calls), as
 * `createSession` returns express-session's `Session` and the app's data.
 */
export interface SessionStoreBase extends EventEmitter {
  regenerate(req: IncomingMessage, callback: (err?: unknown) => unknown): void;
  load<T extends StoreSessionData = StoredSession>(sid: string, callback: (err: unknown, session?: T) => unknown): void;
  createSession<T extends object>(req: IncomingMessage, session: StoreSessionData): T;
}

/**
 * express-session's `Store` class, loaded when this module is evaluated (express-session is an optional peer); without
 * the package, a class whose constructor throws MissingPeerError naming it (RedisSessionStore cannot be constructed).
 */
export function loadStoreBase(): new () => SessionStoreBase {
  let failure: () => unknown;
  try {
    return loadExpressSession().Store;
  } catch (err) {
    // not installed: MissingPeerError (E_MISSING_PEER), as the subpaths' gates; installed but failing: its own error
    const peer = 'express-session';
    failure = isNotFound(err, peer)
      ? () => new MissingPeerError(missingPeersMessage('RedisSessionStore', [peer], [peer]))
      : () => err;
  }
  class MissingExpressSession {
    constructor() {
      throw failure();
    }
  }
  return MissingExpressSession as unknown as new () => SessionStoreBase;
}

function loadExpressSession(): { Store: new () => SessionStoreBase; Session?: { prototype: object } } {
  return peerRequire()('express-session') as ReturnType<typeof loadExpressSession>;
}

/** express-session's `Session.prototype` (what its `req.session` is an instance of), or undefined without it. */
const EXPRESS_SESSION = ((): object | undefined => {
  try {
    return loadExpressSession().Session?.prototype;
  } catch {
    return undefined;
  }
})();

/**
 * Refuses, before any Redis command, a session `set` cannot store: anything but an object whose own enumerable fields
 * are its data, i.e. an object literal, a prototype-less object, express-session's Session (what express-session hands
 * `set`: a class instance, its fields own properties) or another class instance. An array, a function, a Map, Set,
 * Date, RegExp, Promise, Error, boxed primitive or typed array (Object.prototype.toString names them) was stored as
 * what Object.keys makes of it ({} for a Map, {"0":"a"} for ['a'], one field per character of a string), replacing
 * the session without a word; null and undefined failed as a Redis outage (503). The common cases cost a prototype
 * read and compare; another class instance one Object.prototype.toString call.
 */
export function checkStoreSession(session: unknown): void {
  if (!isSessionObject(session))
    throw new InvalidKeyError(
      `session must be an object of its fields (express-session's Session or a plain object), not ${kindOf(session)}`,
    );
}

function isSessionObject(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false;
  try {
    const proto: unknown = Object.getPrototypeOf(value);
    if (proto === Object.prototype || proto === null || proto === EXPRESS_SESSION) return true;
    return Object.prototype.toString.call(value) === '[object Object]';
  } catch {
    return false; // a revoked Proxy, a throwing getPrototypeOf trap or Symbol.toStringTag getter
  }
}

/**
 * Errors from the app's own code (a `ttl` function) that the store passes on as they are, never as a Redis failure.
 */
const APP_ERRORS = new WeakSet<object>();

/** `err`, thrown by the app's code: settleStoreCall passes it on unchanged. */
export function appError(err: unknown): unknown {
  if (err !== null && (typeof err === 'object' || typeof err === 'function')) APP_ERRORS.add(err);
  return err;
}

/**
 * Whether `err` cannot come from the Redis client: a JavaScript engine error (TypeError, RangeError, SyntaxError,
 * ReferenceError...: a bug, or a value the store could not handle) or one the app's code threw. The driver fails
 * with plain Errors (a closed connection, a timeout) and redis-errors' classes (ReplyError, AbortError...).
 */
function notFromRedis(err: unknown): boolean {
  return (
    err instanceof TypeError ||
    err instanceof RangeError ||
    err instanceof SyntaxError ||
    err instanceof ReferenceError ||
    err instanceof EvalError ||
    err instanceof URIError ||
    (err !== null && typeof err === 'object' && APP_ERRORS.has(err))
  );
}

/**
 * A store call, with the promise API (connect-redis 8+) and the callback API (express-session) at once. A callback
 * that is neither a function nor undefined / null is an InvalidOptionsError before `run` (no Redis command): it was
 * called after the command ran, a TypeError. A driver error becomes the failure policy's typed error:
 * RedisUnavailableError (its `status` 503: Express answers 503) for a transport failure, RedisReplyError (a 500) for
 * an error reply, with no `cause` (driver errors carry session ids); our typed errors, engine errors and the app's own
 * pass unchanged (a TypeError reported as RedisUnavailableError made Express answer 503 as for an outage).
 */
export async function settleStoreCall<T>(callback: unknown, run: () => Promise<T>): Promise<T> {
  if (callback != null && typeof callback !== 'function')
    throw new InvalidOptionsError(`a store callback must be a function, not ${kindOf(callback)}`);
  const done = callback as StoreCallback<T> | null | undefined;
  let value: T;
  try {
    value = await run();
  } catch (err) {
    const wrapped = notFromRedis(err) ? err : classifyRedisError(err, 'session store', false);
    if (done) {
      done(wrapped);
      return undefined as T;
    }
    throw wrapped;
  }
  done?.(null, value);
  return value;
}
