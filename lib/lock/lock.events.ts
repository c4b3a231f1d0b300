import { EventEmitter } from 'node:events';
import { type DiagnosticsPayload, diagnose, observed, type REDIS_TOOLKIT_CHANNELS } from '../common/diagnostics.js';

/** What a lock event tells about the lock. Never the owner token: listeners may log it, and the token is the key. */
export interface LockEventInfo {
  /** 'lock' (one resource), 'multi' (several resources at once) or 'semaphore' (one of `limit` permits). */
  readonly kind: 'lock' | 'multi' | 'semaphore';
  /** The resource (a lock), the resources joined by ',' (multi) or the semaphore's name. */
  readonly resource: string;
  /** The lock's fencing token (the largest of them for a multi-resource lock; 0 for a semaphore permit). */
  readonly fencingToken: number;
  /** Epoch ms until which it is ours (after an extension: the new expiry). */
  readonly expiresAt: number;
  /** The ttl it was acquired with (ms). */
  readonly ttl: number;
}

export interface LockLostEventInfo extends LockEventInfo {
  /** Why: refused by Redis (another owner has it now), or expired before an extension could land. */
  readonly reason: Error;
}

export interface LockBusyEventInfo {
  readonly kind: 'lock' | 'multi' | 'semaphore';
  readonly resource: string;
  /** Attempts made before giving up (1 for tryAcquire). */
  readonly attempts: number;
}

/** Event name → payload. */
export interface LockEventMap {
  /** A lock, multi-resource lock or semaphore permit was acquired (also by a hand-over from a local releaser). */
  acquired: [LockEventInfo];
  /** An extension (by hand or automatic) was confirmed. */
  extended: [LockEventInfo];
  /** Released by its owner. */
  released: [LockEventInfo];
  /** Found to be no longer ours: an extend or release was refused, or it expired before an extension landed. */
  lost: [LockLostEventInfo];
  /** A call gave up because another owner holds it: tryAcquire returned null, or acquire threw LockNotAcquiredError. */
  busy: [LockBusyEventInfo];
}

export type LockEventName = keyof LockEventMap;

/**
 * The typed emitter behind `LockService.events`. Every lock event of the service goes through `report`, the one
 * emitting point (so it can be routed elsewhere, e.g. to diagnostics_channel, in one place).
 */
export class LockEvents extends EventEmitter<LockEventMap> {
  /** @internal */
  constructor(private readonly onListenerError: (name: LockEventName, err: unknown) => void) {
    super();
  }

  /**
   * @internal Emits `name` when someone listens. `payload` is a function so the hot path builds no object without
   * listeners. A listener's exception is caught and logged: a logging listener must not make a held lock look lost
   * or a successful release look failed.
   */
  report<K extends LockEventName>(name: K, payload: () => LockEventMap[K][0]): void {
    const channel = DIAGNOSTICS[name];
    const diagnosed = observed(channel);
    if (!diagnosed && this.listenerCount(name) === 0) return;
    const info = payload();
    if (diagnosed) diagnose(channel, () => toDiagnostics(name, info));
    if (this.listenerCount(name) === 0) return;
    try {
      (this.emit as (n: K, p: LockEventMap[K][0]) => boolean)(name, info);
    } catch (err) {
      this.onListenerError(name, err);
    }
  }
}

/** Lock event → its diagnostics_channel (busy is the acquire that failed). */
const DIAGNOSTICS: Record<LockEventName, keyof typeof REDIS_TOOLKIT_CHANNELS> = {
  acquired: 'lockAcquire',
  busy: 'lockAcquire',
  extended: 'lockExtend',
  released: 'lockRelease',
  lost: 'lockLost',
};

const OPERATIONS: Record<LockEventName, string> = {
  acquired: 'acquire',
  busy: 'acquire',
  extended: 'extend',
  released: 'release',
  lost: 'lost',
};

/** The event as a diagnostics payload: the same fields (none of them is the token), plus feature/operation/outcome. */
function toDiagnostics(name: LockEventName, info: LockEventMap[LockEventName][0]): DiagnosticsPayload {
  const base = {
    feature: 'lock' as const,
    operation: OPERATIONS[name],
    outcome: name,
    kind: info.kind,
    resource: info.resource,
  };
  if ('attempts' in info) return { ...base, attempts: info.attempts };
  const held = { ...base, fencingToken: info.fencingToken, ttl: info.ttl, expiresAt: info.expiresAt };
  return 'reason' in info ? { ...held, reason: info.reason.name } : held;
}
