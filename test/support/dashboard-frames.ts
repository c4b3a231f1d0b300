import type { DashboardFrame } from '../../lib/dashboard/index.js';

/**
 * A dashboard frame as another instance would publish it, of a 60 s interval with every count 0, and `over` put over
 * it (e.g. `{ rateLimit: { api: [4, 1] } }`).
 */
export function quietFrame(instance: string, at: number, over: Partial<DashboardFrame> = {}): DashboardFrame {
  return {
    v: 1,
    instance,
    at,
    ms: 60_000,
    instances: 1,
    cache: { hits: 0, staleHits: 0, misses: 0, loads: 0, loadMs: 0, loadMaxMs: 0 },
    tags: [],
    rateLimit: {},
    locks: { held: 0, waiting: 0, acquired: 0, busy: 0, lost: 0 },
    sessions: { active: null, created: 0, destroyed: 0 },
    pubsub: { published: 0, failed: 0 },
    redis: null,
    ...over,
  };
}
