/** Session data: a plain object whose top-level fields are stored (and merged by `update`) one by one. */
export type SessionData = Record<string, unknown>;

/** A session as SessionService returns it. Times are epoch milliseconds. */
export interface Session<T extends SessionData = SessionData> {
  /** 43 characters, base64url: never log it. */
  readonly id: string;
  readonly userId: string;
  readonly data: T;
  readonly createdAt: number;
  readonly lastAccessedAt: number;
  /** When the session expires unless touched again (never later than createdAt + maxAgeMs). */
  readonly expiresAt: number;
}

export interface CreateSessionOptions {
  /** Idle ttl of this session in ms (default: the module's `session.ttl`). */
  ttl?: number;
}
