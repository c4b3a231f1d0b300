import type { Socket } from 'socket.io';
import type { PubSubService } from '../pubsub/pubsub.service.js';
import { SESSION_REVOKED_CHANNEL, sessionIdHash, type SessionRevocation } from '../session/session.revocation.js';

/** How long a revoked session is remembered, for a handshake that looked the session up just before its revocation. */
const RECENT_MS = 60_000;
/** Most revoked sessions remembered (the oldest go first): memory stays bounded whatever the revocation rate. */
const RECENT_MAX = 10_000;
/** Sessions looked up at once when the sockets are re-checked after a reconnect. */
const RECHECK_BATCH = 64;

/**
 * The sockets of this instance authenticated by a session (`user.sessionId`), by session hash, and the subscription to
 * SESSION_REVOKED_CHANNEL: when any instance destroys a session (destroy, destroyAllForUser, regenerate), its sockets
 * here are disconnected.
 */
export class SessionRevocations {
  private readonly sockets = new Map<string, Set<Socket>>();
  /** The session id of each registered socket, for the re-check after a reconnect. */
  private readonly sessionOf = new Map<Socket, string>();
  /** Hashes revoked in the last RECENT_MS, oldest first (Map keeps insertion order). */
  private readonly recent = new Map<string, number>();
  private subscribed: Promise<void> | undefined;
  /** Whether the reconnect and drop listeners are registered (once; `subscribed` may be made again after a drop). */
  private listening = false;
  private revokedCount = 0;

  /**
   * @param sessionExists whether a session still exists (SessionService.exists): after the subscriber reconnects,
   *   every registered socket's session is looked up, since revocations published meanwhile were lost.
   */
  constructor(
    private readonly pubsub: PubSubService,
    private readonly onRevoked: (socket: Socket) => void,
    private readonly sessionExists: ((sessionId: string) => Promise<boolean>) | undefined,
    private readonly onRecheckFailed: (err: unknown) => void,
  ) {}

  /** Sockets disconnected because their session was revoked. */
  get revoked(): number {
    return this.revokedCount;
  }

  /**
   * Resolves once revocations are received (subscribed once per instance; a failure is retried by the next call).
   * Awaited before a session is looked up at handshake, so no revocation can fall between lookup and registration.
   */
  ready(): Promise<void> {
    this.subscribed ??= this.pubsub
      .subscribe<SessionRevocation>(SESSION_REVOKED_CHANNEL, (message) => this.receive(message))
      .then(
        () => {
          if (this.listening) {
            // subscribed again after Redis dropped it: revocations published meanwhile never arrived
            this.recheck().catch(this.onRecheckFailed);
            return;
          }
          this.listening = true;
          this.pubsub.onResubscribed(() => {
            this.recheck().catch(this.onRecheckFailed);
          });
          // Refused after a reconnect (an ACL tightened): logged by pub/sub; the next handshake subscribes again
          // rather than being admitted as if revocations still arrived (and is refused while Redis still says no).
          this.pubsub.onSubscriptionDropped((name) => {
            if (name === SESSION_REVOKED_CHANNEL) this.subscribed = undefined;
          });
        },
        (err: unknown) => {
          this.subscribed = undefined;
          throw err;
        },
      );
    return this.subscribed;
  }

  /** Binds `socket` to its session; false when that session was revoked meanwhile (refuse the socket). */
  register(socket: Socket, sessionId: string): boolean {
    const hash = sessionIdHash(sessionId);
    if (this.isRecent(hash)) return false;
    let set = this.sockets.get(hash);
    if (!set) this.sockets.set(hash, (set = new Set()));
    set.add(socket);
    this.sessionOf.set(socket, sessionId);
    return true;
  }

  unregister(socket: Socket, sessionId: string): void {
    const hash = sessionIdHash(sessionId);
    this.sessionOf.delete(socket);
    const set = this.sockets.get(hash);
    set?.delete(socket);
    if (set?.size === 0) this.sockets.delete(hash);
  }

  /**
   * Revokes every registered socket whose session no longer exists; resolves to how many. Run after the subscriber
   * reconnects: a revocation published while it was away never arrives.
   */
  async recheck(): Promise<number> {
    const exists = this.sessionExists;
    if (!exists) return 0;
    const entries = [...this.sessionOf];
    let revoked = 0;
    for (let i = 0; i < entries.length; i += RECHECK_BATCH) {
      const batch = entries.slice(i, i + RECHECK_BATCH);
      const alive = await Promise.all(batch.map(([, sessionId]) => exists(sessionId)));
      batch.forEach(([socket, sessionId], j) => {
        if (alive[j] || this.sessionOf.get(socket) !== sessionId) return;
        this.revokeHashes([sessionIdHash(sessionId)]);
        revoked++;
      });
    }
    return revoked;
  }

  private receive(message: SessionRevocation): void {
    if (!message || !Array.isArray(message.s)) return;
    this.revokeHashes(message.s);
  }

  private revokeHashes(hashes: unknown[]): void {
    const now = Date.now();
    for (const hash of hashes) {
      if (typeof hash !== 'string') continue;
      this.recent.delete(hash);
      this.recent.set(hash, now + RECENT_MS);
      const set = this.sockets.get(hash);
      if (!set) continue;
      this.sockets.delete(hash);
      for (const socket of set) {
        this.sessionOf.delete(socket);
        this.revokedCount++;
        this.onRevoked(socket);
      }
    }
    for (const [hash, until] of this.recent) {
      if (until > now && this.recent.size <= RECENT_MAX) break;
      this.recent.delete(hash);
    }
  }

  private isRecent(hash: string): boolean {
    const until = this.recent.get(hash);
    return until !== undefined && until > Date.now();
  }
}
