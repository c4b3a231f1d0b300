import type { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import { InvalidOptionsError } from '../common/errors.js';

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
 * the package, a class whose constructor throws a clear error (RedisSessionStore cannot be constructed).
 */
export function loadStoreBase(): new () => SessionStoreBase {
  try {
    return (createRequire(import.meta.url)('express-session') as { Store: new () => SessionStoreBase }).Store;
  } catch {
    class MissingExpressSession {
      constructor() {
        throw new InvalidOptionsError(
          'RedisSessionStore needs the express-session package: npm install express-session',
        );
      }
    }
    return MissingExpressSession as unknown as new () => SessionStoreBase;
  }
}
