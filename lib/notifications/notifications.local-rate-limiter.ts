import { makeRoom } from '../common/bounded-map.js';
import type { GatewayRateLimiter } from './notifications.options.js';

/**
 * Most windows the local limiter keeps. Past it (more users subscribing within one window than this), the window
 * opened longest ago goes: that user's count starts again. Until 2026-12-06 there was no cap, and one window per user
 * of the last `ttl` stayed, however many users (gateway-churn.spec.ts).
 */
export const LOCAL_RATE_LIMIT_WINDOWS = 10_000;

/** The local limiter, with the number of windows it holds (for the tests and for a look at a running app). */
export interface LocalRateLimiter extends GatewayRateLimiter {
  readonly size: number;
}

/**
 * A fixed window per key in this process: the fallback when RateLimitService is not available. Subscribe messages
 * arrive on the instance holding the socket, so a per-instance limit still bounds what one client can send.
 */
export function localRateLimiter(): LocalRateLimiter {
  // In the order the windows opened (a window opened again goes to the end): the expired ones come first, so each call
  // drops them from the front and stops at the first still open (one policy, one ttl, per gateway).
  const windows = new Map<string, { start: number; count: number }>();
  const limiter: GatewayRateLimiter = async (key, { limit, ttl }) => {
    // the monotonic clock: a wall clock stepped back kept every window open until it caught up
    const now = performance.now();
    for (const [k, w] of windows) {
      if (now - w.start < ttl) break;
      windows.delete(k);
    }
    let w = windows.get(key);
    if (w && now - w.start >= ttl) windows.delete(key); // behind one still open (a call with another ttl)
    if (!w || now - w.start >= ttl) {
      makeRoom(windows, LOCAL_RATE_LIMIT_WINDOWS);
      w = { start: now, count: 0 };
      windows.set(key, w);
    }
    w.count++;
    return w.count <= limit
      ? { allowed: true, retryAfterMs: 0 }
      : { allowed: false, retryAfterMs: w.start + ttl - now };
  };
  return Object.defineProperty(limiter, 'size', { get: () => windows.size }) as LocalRateLimiter;
}
