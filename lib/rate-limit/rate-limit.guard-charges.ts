/**
 * What RateLimitGuard keeps of the charges it made: which counters of a call (an HTTP request, a GraphQL field, a
 * Socket.IO message) some guard already charged, and the refunds of skipSuccessfulRequests / skipFailedRequests sent
 * once the response is done.
 */
import type { NamedThrottleOptions } from './rate-limit.decorators.js';
import type { ThrottledResponse } from './rate-limit.guard.js';
import type { RateLimitAlgorithm } from './rate-limit.options.js';
import { defaultScope } from './rate-limit.policy-resolver.js';
import type { RateLimitCheck, RateLimitService } from './rate-limit.service.js';
import type { RewardOptions } from './rate-limit.types.js';

/** A charge to give back once the response is done (refundOnFinish). */
export interface PendingRefund {
  check: RateLimitCheck;
  options: NamedThrottleOptions;
  openUntil: number;
  /** Made by the insurance limiter (Redis unreachable): given back to it, never to Redis (RewardOptions.degraded). */
  insured: boolean;
}

/**
 * skipSuccessfulRequests / skipFailedRequests: once the response is sent (or the connection closed before, even
 * before the charge was made), gives the charge of those policies back, while the charge still counts (`openUntil`:
 * the window it was made in, or the time its token or log entry takes to come back). A later refund would be taken
 * from the charges made since (a request that outlived its window: its refund freed a unit of the next window's, and
 * a full window admitted one more). A refund that fails is logged by the service (its failure policy), never thrown.
 */
export function refundOnFinish(rateLimit: RateLimitService, res: ThrottledResponse, refunds: PendingRefund[]): void {
  const raw = (res as { raw?: NodeResponse }).raw ?? (res as NodeResponse);
  if (typeof raw.once !== 'function') return;
  let settled = false;
  // Bun before 1.4 emits no 'close' on the response of a client that aborts, only on its socket: listened to as well
  // (taken off when settled, so a keep-alive socket does not collect one listener per request)
  const socket = raw.socket;
  const closed = () => settle(false);
  const settle = (success: boolean) => {
    if (settled) return;
    settled = true;
    socket?.off?.('close', closed);
    const now = performance.now();
    for (const { check, options, openUntil, insured } of refunds) {
      const cost = check.policy.cost ?? 1;
      if (cost === 0 || !(success ? options.skipSuccessfulRequests : options.skipFailedRequests)) continue;
      if (now >= openUntil) continue;
      // the window it names: a fixed window refunded once a later one counts is left as it is (reward.lua)
      const charge: RewardOptions = insured
        ? { windowEndsAt: openUntil, degraded: 'insurance' }
        : { windowEndsAt: openUntil };
      rateLimit.reward(check.key, cost, check.policy, check.scope, charge).catch(() => undefined);
    }
  };
  // HTTP/2 emits 'finish' (then 'close') on a stream the client reset, nothing sent and the status still 200: only a
  // response that was ended is one that finished (HTTP/1.1 emits 'finish' after end() only, so it is unchanged)
  const finished = () => settle(raw.writableEnded !== false && (raw.statusCode ?? 200) < 400);
  raw.once('finish', finished);
  raw.once('close', closed);
  // HTTP/2: the stream emits 'close' itself, and its socket is the session's, shared by every stream
  if (raw.stream === undefined) socket?.once?.('close', closed);
  // the client may have gone while the charge was sent (an abort during the Redis round trip): its 'close' came
  // before these listeners, and the charge would have stayed for the window
  if (raw.writableFinished === true) finished();
  else if (raw.destroyed === true) closed();
}

/** The checks whose counter no guard has charged yet for this call (chargeScopeOf); marks them charged. */
export function unchargedChecks(
  rateLimit: RateLimitService,
  defaultAlgorithm: RateLimitAlgorithm,
  scope: object,
  checks: RateLimitCheck[],
): RateLimitCheck[] {
  let charged = chargedCounters.get(scope);
  if (!charged) chargedCounters.set(scope, (charged = new Set()));
  const pending: RateLimitCheck[] = [];
  for (const check of checks) {
    const algorithm = check.policy.algorithm ?? defaultAlgorithm;
    // the counter the service charges: a check without a scope is the policy's own (defaultScope). Named '' here
    // until 2026-12-06, so two policies of a generateKey that gives undefined were one, and the second never charged
    const counter = rateLimit.redisKey(check.key, check.scope ?? defaultScope(check.policy), algorithm);
    if (charged.has(counter)) continue;
    charged.add(counter);
    pending.push(check);
  }
  return pending;
}

/** The Node response under Express's response or Fastify's reply (`reply.raw`). */
interface NodeResponse {
  statusCode?: number;
  writableFinished?: boolean;
  writableEnded?: boolean;
  destroyed?: boolean;
  /** An HTTP/2 response's stream (Http2ServerResponse); undefined on HTTP/1.1. */
  stream?: unknown;
  socket?: {
    once?(event: 'close', listener: () => void): unknown;
    off?(event: 'close', listener: () => void): unknown;
  } | null;
  once?(event: 'finish' | 'close', listener: () => void): unknown;
}

/** Per HTTP request, the counters (Redis keys) some RateLimitGuard already charged. */
const chargedCounters = new WeakMap<object, Set<string>>();
