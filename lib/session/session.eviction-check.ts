import type { LoggerService } from '@nestjs/common';
import { EvictionPolicyCheck } from '../connection/eviction-policy-check.js';
import type { RedisConnection } from '../connection/redis-connection.js';

/**
 * Whether the sessions' server(s) may evict their keys: checked once, at the first `create` or `destroyAllForUser` of
 * this SessionService (on a ready connection). A process that never writes a session sends nothing.
 */
export function sessionEvictionCheck(connection: RedisConnection, logger: LoggerService): EvictionPolicyCheck {
  return new EvictionPolicyCheck(connection, logger, {
    feature: 'sessions',
    risk:
      "a user's session index can be evicted while their sessions stay (an index is touched only at login and " +
      'logout, sessions on every request, so LRU and LFU pick indexes first; every key has a TTL, so volatile-* ' +
      'policies too), and destroyAllForUser ("log out everywhere") then leaves those sessions logged in; a ' +
      "destroyed session's tombstone can go before tombstoneMs, so a late write can bring it back; and an evicted " +
      'session logs its user out, all without an error',
    remedy:
      'Keep sessions on a Redis that does not evict (e.g. session on a named connection whose server has ' +
      'maxmemory-policy noeviction), or size maxmemory so it never evicts',
  });
}
