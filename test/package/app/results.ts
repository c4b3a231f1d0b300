// Handlers that return a service's result as it is, with their types inferred. Under `declaration: true` (what the
// Nest CLI's tsconfig sets) tsc must name each of those types in the emitted .d.ts, so every type a root service's
// method returns must be importable from the package root: until 2026-12-06 seven were only on /advanced and such a
// handler failed to compile (TS2883 "The inferred type of 'stats' cannot be named without a reference to ...").
import { Injectable } from '@nestjs/common';
import {
  CacheService,
  type Lock,
  LockService,
  PubSubService,
  RateLimitService,
  RedisToolkitHealth,
  SessionService,
} from 'nestjs-redis-toolkit';

const policy = { limit: 5, ttl: 60_000 };

@Injectable()
export class FeatureResults {
  constructor(
    private readonly cache: CacheService,
    private readonly rateLimit: RateLimitService,
    private readonly sessions: SessionService,
    private readonly locks: LockService,
    private readonly pubsub: PubSubService,
    private readonly health: RedisToolkitHealth,
  ) {}

  cacheStats() {
    return this.cache.stats();
  }

  cacheWithStatus() {
    return this.cache.getOrSetWithStatus('answer', () => 42);
  }

  rateLimitStats() {
    return this.rateLimit.stats();
  }

  consume() {
    return this.rateLimit.consume('client', policy);
  }

  consumeAll() {
    return this.rateLimit.consumeAll([{ key: 'client', policy }]);
  }

  session(id: string) {
    return this.sessions.get(id);
  }

  sessionsOf(userId: string) {
    return this.sessions.listForUser(userId);
  }

  lock() {
    return this.locks.acquire('order:1');
  }

  lockInfo(lock: Lock) {
    return lock.info;
  }

  semaphore() {
    return this.locks.semaphore('exports', { limit: 2 });
  }

  subscription() {
    return this.pubsub.subscribe('news', () => undefined);
  }

  healthCheck() {
    return this.health.check();
  }
}
