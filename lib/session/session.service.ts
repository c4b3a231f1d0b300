import { Inject, Injectable, Logger, type OnApplicationShutdown, type OnModuleInit, Optional } from '@nestjs/common';
import { InvalidKeyError, InvalidOptionsError, SessionNotFoundError } from '../common/errors.js';
import { KeyBuilder } from '../common/keys.js';
import { SERIALIZER, type Serializer } from '../common/serializer.js';
import { FailurePolicy } from '../common/failure-policy.js';
import { ThrottledWarning } from '../common/throttled-logger.js';
import { durationProblem, isDuration, isPlainObject, kindOf } from '../common/option-checks.js';
import type { EvictionPolicyCheck } from '../connection/eviction-policy-check.js';
import { RedisConnection } from '../connection/redis-connection.js';
import { FEATURE_CONNECTION } from '../connection/redis-connections.js';
import {
  appendSetCookie,
  cookieExpiry,
  MAX_SESSION_COOKIES,
  readSessionIdFromCookieHeader,
  readSessionIdsFromCookieHeader,
  serializeSetCookie,
  signCookieValue,
  type CookieResponse,
} from './session.cookie.js';
import { isSecureRequest } from './session.http.js';
import { isValidSessionId } from './session.id.js';
import { moveSession } from './session.regenerate.js';
import { newSession } from './session.create.js';
import {
  registerSessionRevoker,
  SESSION_REVOKED_CHANNEL,
  sessionIdHash,
  type SessionRevocation,
} from './session.revocation.js';
import { PubSubService } from '../pubsub/pubsub.service.js';
import { SESSION_OPTIONS, shortSecretWarning, type ResolvedSessionOptions } from './session.options.js';
import { checkCreateOptions } from './session.options.js';
import { checkFieldName, encodeField, encodeSessionData, toSession } from './session.envelope.js';
import { sessionEvictionCheck } from './session.eviction-check.js';
import { guardSessionCall } from './session.failures.js';
import { SessionRecords } from './session.records.js';
import { SessionSizeBound } from './session.size-bound.js';
import { clockAheadMessage, sessionClock } from './session.deadline.js';
import type { CreateSessionOptions, Session, SessionData } from './session.types.js';
import { diagnose, traced } from '../common/diagnostics.js';

/**
 * The parts of a request `secure: 'auto'` looks at: Express sets `secure` (from the protocol and `trust proxy`),
 * Fastify `protocol` (from the socket and `trustProxy`). Express's and Fastify's requests satisfy it.
 */
export interface CookieRequest {
  secure?: boolean;
  protocol?: string;
}

/**
 * Sessions in Redis: one JSON string per session (`<prefix>sess:{<id>}`), touched by the read itself (GETEX PX),
 * merged field by field by `update` (in this process, written with a compare-and-set script: see SessionRecords),
 * indexed per user in a sorted set (`<prefix>sess:user:{<userId>}`).
 *
 * Failure policy: sessions fail closed. Every Redis failure is a RedisUnavailableError (SessionMiddleware turns it into
 * a 503); nothing is ever treated as "no session". Ids are never logged nor put in error messages.
 */
@Injectable()
export class SessionService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('RedisToolkit:Session');
  /** This process's clock ahead of Redis's (a session past its deadline here, live there): once a minute at most. */
  private readonly clockWarning = new ThrottledWarning(
    this.logger,
    60_000,
    () => 'reads past a deadline by this clock',
  );
  private readonly failures: FailurePolicy;
  private readonly records: SessionRecords;
  /** Takes back the revoker registered for the client (see registerSessionRevoker). */
  private readonly unregisterRevoker: (() => void) | undefined;
  private readonly serializer: Serializer;
  private readonly evictionCheck: EvictionPolicyCheck;
  /** session.maxSize, lowered by the server's reply limit (read at start, shared with the cache on the connection). */
  private readonly size: SessionSizeBound;
  readonly options: ResolvedSessionOptions;

  constructor(
    @Inject(FEATURE_CONNECTION.session) connection: RedisConnection,
    @Inject(SESSION_OPTIONS) options: ResolvedSessionOptions,
    @Inject(SERIALIZER) serializer: Serializer,
    keys: KeyBuilder,
    @Optional() private readonly pubsub?: PubSubService,
  ) {
    const redisClock = sessionClock(connection.client, connection.commandTimeout, (m) => this.logger.warn(m));
    const { maxSize, maxSizeGiven } = options;
    const size = new SessionSizeBound(maxSize, 'session.maxSize', maxSizeGiven, (m) => this.logger.warn(m));
    this.size = size.watch(connection);
    this.records = new SessionRecords(connection.client, keys.prefix, { ...options, size, redisClock }, (ms) =>
      this.clockWarning.warn(clockAheadMessage(ms)),
    );
    // No `cause` on our errors: driver errors carry the command's arguments, and those hold session ids.
    this.failures = new FailurePolicy(connection, { feature: 'session', logger: this.logger, withCause: false });
    this.serializer = serializer;
    this.evictionCheck = sessionEvictionCheck(connection, this.logger);
    this.options = options;
    const shortSecret = shortSecretWarning(options.cookie.secrets);
    if (shortSecret) this.logger.warn(shortSecret);
    // RedisSessionStore on this client revokes the sockets of the sessions it destroys through this instance.
    if (pubsub) this.unregisterRevoker = registerSessionRevoker(connection.client, (ids) => this.revoke(ids));
  }

  async onModuleInit(): Promise<void> {
    // Redis's clock and the server's reply limit before the first call (lazyConnect: at the first ready)
    await Promise.all([this.records.deadline.start(), this.size.start()]);
  }

  onApplicationShutdown(): void {
    this.unregisterRevoker?.();
    this.records.deadline.close();
    this.size.close();
    this.evictionCheck.close(); // its INFO, if still out, fails with the closed connection: nothing to say
    this.failures.close();
    this.clockWarning.close();
  }

  /** Creates a session for `userId` with a fresh 256-bit id. */
  create<T extends SessionData = SessionData>(
    userId: string,
    data?: T,
    options: CreateSessionOptions = {},
  ): Promise<Session<T>> {
    return traced('sessionCreate', creating, () => this.createSession(userId, data, options), created);
  }

  private async createSession<T extends SessionData>(
    userId: string,
    data: T | undefined,
    options: CreateSessionOptions,
  ): Promise<Session<T>> {
    KeyBuilder.validate(userId, 'userId');
    checkCreateOptions(options);
    const ttl = options.ttl ?? this.options.ttl;
    if (!isDuration(ttl)) throw new InvalidOptionsError(`session ttl ${durationProblem(ttl)}`);
    if (data != null) checkPlainObject(data, 'data');
    const fields = encodeSessionData(this.serializer, data ?? {}, 'data');
    return this.guard('create', async () => {
      this.evictionCheck.once();
      const settle = (user: string, id: string) => this.settle(user, id);
      const made = await newSession(this.records, userId, Math.ceil(ttl), this.options.maxAgeMs, fields, settle);
      return toSession<T>(this.serializer, made.id, made.session, true);
    });
  }

  /**
   * The session, or null when it does not exist, expired or `id` is malformed (rejected without any Redis command).
   * With `rolling` (default) the idle ttl is extended by the read itself (one GETEX PX).
   */
  async get<T extends SessionData = SessionData>(id: unknown): Promise<Session<T> | null> {
    if (!isValidSessionId(id)) return null;
    const raw = await this.guard('get', () =>
      this.records.read(id, this.options.rolling ? this.options.ttl : undefined),
    );
    return raw ? toSession<T>(this.serializer, id, raw) : null;
  }

  /** Whether the session exists; unlike `get` it never extends the idle ttl. A malformed id is false, unsent. */
  async exists(id: unknown): Promise<boolean> {
    if (!isValidSessionId(id)) return false;
    return (await this.guard('exists', () => this.records.read(id, undefined))) !== null;
  }

  /**
   * Merges `patch` into the session data without losing a concurrent update (a compare-and-set, see SessionRecords):
   * each top-level field is set, a field set to `undefined` is deleted; fields not in the patch are untouched, so
   * concurrent updates of different fields all survive. Throws SessionNotFoundError when the session does not exist
   * (an expired or destroyed session is never brought back).
   */
  async update<T extends SessionData = SessionData>(id: unknown, patch: Partial<T> | SessionData): Promise<Session<T>> {
    if (!isValidSessionId(id)) throw new SessionNotFoundError('session not found (malformed id)');
    checkPlainObject(patch, 'patch');
    const sets: [string, string][] = [];
    const deletes: string[] = [];
    for (const [name, value] of Object.entries(patch)) {
      if (value === undefined) deletes.push(checkFieldName(name));
      else sets.push([name, encodeField(this.serializer, name, value)]);
    }
    const raw = await this.guard('update', () => this.records.update(id, this.options.rolling, sets, deletes));
    if (!raw) throw new SessionNotFoundError('session not found (expired or destroyed)');
    return toSession<T>(this.serializer, id, raw, true);
  }

  /**
   * Moves the session to a new id (same user, data, createdAt and absolute deadline) and destroys the old id, leaving
   * a tombstone: call it when privileges change (after login) against session fixation. Throws SessionNotFoundError
   * when the session does not exist (or is destroyed concurrently).
   */
  async regenerate<T extends SessionData = SessionData>(id: unknown): Promise<Session<T>> {
    if (!isValidSessionId(id)) throw new SessionNotFoundError('session not found (malformed id)');
    return this.guard('regenerate', async () => {
      const { id: next, session } = await moveSession(this.records, id, this.options.tombstoneMs, {
        settle: (userId, newId) => this.settle(userId, newId),
        revoke: (ids) => this.revoke(ids),
      });
      return toSession<T>(this.serializer, next, session, true);
    });
  }

  /**
   * Destroys the session and leaves a tombstone for `tombstoneMs`, so a late write (an in-flight request, a store
   * `set`) cannot bring it back. Returns whether it existed; a malformed id returns false without a Redis command.
   */
  async destroy(id: unknown): Promise<boolean> {
    if (!isValidSessionId(id)) return false;
    return traced('sessionDestroy', destroying, () => this.destroyValid(id), destroyed);
  }

  private destroyValid(id: string): Promise<boolean> {
    return this.guard('destroy', async () => {
      const userId = await this.records.destroy(id, this.options.tombstoneMs);
      // Announced even when already gone: a retry after a failed announcement must still reach the gateways.
      await this.revoke([id]);
      const outcome = userId === null ? 'missing' : 'destroyed';
      diagnose('sessionDestroy', () => ({ feature: 'session', operation: 'destroy', outcome }));
      if (userId === null) return false;
      if (userId !== '') await this.records.index.remove(userId, [id]);
      return true;
    });
  }

  /** The user's live sessions (read without touching them), oldest first; dead ids found on the way are pruned. */
  async listForUser<T extends SessionData = SessionData>(userId: string): Promise<Session<T>[]> {
    KeyBuilder.validate(userId, 'userId');
    return this.guard('listForUser', async () => {
      const { ids, pending } = await this.records.index.idsWithPending(userId);
      const raws = await Promise.all(ids.map((id) => this.records.read(id, undefined)));
      const dead = ids.filter((id, i) => raws[i] === null && !pending.has(id));
      await this.records.index.prune(userId, dead);
      return raws
        .map((raw, i) => (raw ? toSession<T>(this.serializer, ids[i], raw) : null))
        .filter((s): s is Session<T> => s !== null && s.userId === userId)
        .sort((a, b) => a.createdAt - b.createdAt);
    });
  }

  /**
   * Destroys every session of the user (each with a tombstone) and empties the index; returns how many existed.
   * On a cluster the sessions live in other slots than the index: one script per session, sent concurrently.
   * A session id enters the index before its session is written, so every session that exists when this is called is
   * destroyed; an id whose session is still on its way gets a tombstone, so that write fails (create retries with a
   * new id: a login concurrent with "log out everywhere" ends up after it).
   */
  async destroyAllForUser(userId: string): Promise<number> {
    KeyBuilder.validate(userId, 'userId');
    return this.guard('destroyAllForUser', async () => {
      this.evictionCheck.once();
      const ids = await this.records.index.ids(userId, 0);
      const owners = await Promise.all(ids.map((id) => this.records.destroy(id, this.options.tombstoneMs, true)));
      await this.revoke(ids);
      await this.records.index.remove(userId, ids);
      return owners.filter((u) => u !== null).length;
    });
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Cookies
  // ---------------------------------------------------------------------------------------------------------------

  /**
   * The session id carried by a raw `Cookie` header (HTTP request or WebSocket handshake), verified against the
   * configured secret(s); null when absent, unsigned, tampered or malformed. No Redis command: pass the result to
   * `get(id)`.
   */
  idFromCookieHeader(header: string | string[] | undefined): string | null {
    return readSessionIdFromCookieHeader(header, {
      name: this.options.cookie.name,
      secrets: this.options.cookie.secrets,
    });
  }

  /**
   * Every verified session id of the header's first 32 cookies of the session's name, in header order; usually one.
   * Several when a sibling subdomain (or a plain-HTTP response) set a cookie of the same name, which the browser may
   * send first: take the first live session in that order, as SessionMiddleware and SessionGuard do (and the
   * notifications gateway's default authenticate), reading them all at once. No Redis command.
   */
  idsFromCookieHeader(header: string | string[] | undefined): string[] {
    return readSessionIdsFromCookieHeader(
      header,
      { name: this.options.cookie.name, secrets: this.options.cookie.secrets },
      MAX_SESSION_COOKIES,
    );
  }

  /**
   * The signed cookie value for a session id (`s:<id>.<hmac>`), e.g. for a WebSocket client or a test. InvalidKeyError
   * for what is no session id (undefined, '', a number...), which was signed as it was or was a TypeError.
   */
  signedCookieValue(id: string): string {
    if (!isValidSessionId(id)) {
      throw new InvalidKeyError(`session cookie: the id to sign must be a session id, got ${kindOf(id)}`);
    }
    return signCookieValue(id, this.requireSecret());
  }

  /**
   * Sets the signed session cookie on a response (after `create`/`regenerate`, or to refresh its expiry): an Express
   * `Response`, a Fastify `FastifyReply` or a Node `ServerResponse` (else InvalidOptionsError). The id must be a
   * session id (InvalidKeyError) and expiresAt a time in epoch ms (InvalidOptionsError), even with `cookie.maxAge`.
   */
  writeCookie(res: CookieResponse, session: Pick<Session, 'id' | 'expiresAt'>, req?: CookieRequest): void {
    const c = this.options.cookie;
    if (typeof session !== 'object' || session === null) {
      throw new InvalidOptionsError(`writeCookie(res, session): session must be a Session, got ${kindOf(session)}`);
    }
    cookieExpiry(session.expiresAt);
    const cookie = serializeSetCookie(c.name, this.signedCookieValue(session.id), c, {
      expires: session.expiresAt,
      secure: this.isSecure(req),
    });
    appendSetCookie(res, cookie, c.name);
  }

  /** Expires the session cookie in the browser (after logout). */
  clearCookie(res: CookieResponse, req?: CookieRequest): void {
    const c = this.options.cookie;
    const cookie = serializeSetCookie(
      c.name,
      '',
      { ...c, maxAge: undefined },
      { expires: 0, secure: this.isSecure(req) },
    );
    appendSetCookie(res, cookie, c.name);
  }

  private isSecure(req?: CookieRequest): boolean {
    const secure = this.options.cookie.secure;
    return secure === 'auto' ? isSecureRequest(req) : secure;
  }

  private requireSecret(): string {
    const secret = this.options.cookie.secrets[0];
    if (secret === undefined) {
      throw new InvalidOptionsError(
        'session.cookie.secret is required to sign session cookies (RedisToolkitModule options)',
      );
    }
    return secret;
  }

  // ---------------------------------------------------------------------------------------------------------------

  /**
   * Tells every instance's notifications gateway that these sessions are gone (SESSION_REVOKED_CHANNEL, hashes only):
   * each disconnects the WebSockets they authenticated. Awaited, so a destroy that resolves has been announced; a
   * failed announcement fails the call (retry it: destroying again announces again).
   */
  private async revoke(ids: string[]): Promise<void> {
    if (!this.pubsub || ids.length === 0) return;
    const message: SessionRevocation = { s: ids.map(sessionIdHash) };
    await this.pubsub.publish(SESSION_REVOKED_CHANNEL, message);
  }

  /**
   * Lets pruning drop a freshly written id again once its session dies. Not awaited: until it lands (or, should it
   * fail, for 60 s) the id is only kept in the index a little longer. A failure is counted and logged by the policy.
   */
  private settle(userId: string, id: string): void {
    this.guard('index update', () => this.records.index.settled(userId, id)).catch(() => undefined);
  }

  /** Runs a Redis operation under the failure policy (sessions fail closed): see guardSessionCall. */
  private guard<R>(what: string, run: () => Promise<R>): Promise<R> {
    return guardSessionCall(this.failures, what, run);
  }

  /** Failed Redis calls since start (this process): transport failures and error replies. */
  stats(): { unavailable: number; replyErrors: number } {
    return { ...this.failures.counts };
  }
}

/**
 * Session data and a patch are plain objects (prototype Object.prototype or null): their own enumerable fields are
 * what is stored. A Map's, Set's or Date's content is none: create stored `data: {}` and update changed nothing,
 * without a word (before 2026-12-05). Costs a prototype read and compare.
 */
function checkPlainObject(value: unknown, what: 'data' | 'patch'): void {
  let plain: boolean;
  try {
    plain = isPlainObject(value);
  } catch {
    plain = false; // a revoked Proxy, a throwing getPrototypeOf trap
  }
  if (!plain) throw new InvalidKeyError(`session ${what} must be a plain object, not ${kindOf(value)}`);
}

// The traced calls' fields (docs/observability.md): never the session id.
const creating = () => ({ feature: 'session' as const, operation: 'create' });
const created = () => ({ outcome: 'created' });
const destroying = () => ({ feature: 'session' as const, operation: 'destroy' });
const destroyed = (existed: boolean) => ({ outcome: existed ? 'destroyed' : 'missing' });
