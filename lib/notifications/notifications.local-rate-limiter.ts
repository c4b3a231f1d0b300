import type { GatewayRateLimiter } from './notifications.options.js';

/**
 * A fixed window per key in this process: the fallback when RateLimitService is not available. Subscribe messages
 * arrive on the instance holding the socket, so a per-instance limit still bounds what one client can send.
 */
export function localRateLimiter(): GatewayRateLimiter {
  const windows = new Map<string, { start: number; count: number }>();
  let lastSweep = Date.now();
  return async (key, { limit, ttl }) => {
    const now = Date.now();
    if (now - lastSweep > ttl) {
      for (const [k, w] of windows) if (now - w.start >= ttl) windows.delete(k);
      lastSweep = now;
    }
    let w = windows.get(key);
    if (!w || now - w.start >= ttl) {
      w = { start: now, count: 0 };
      windows.set(key, w);
    }
    w.count++;
    return w.count <= limit
      ? { allowed: true, retryAfterMs: 0 }
      : { allowed: false, retryAfterMs: w.start + ttl - now };
  };
}
