import type { Provider } from '@nestjs/common';
import { KeyBuilder } from '../common/keys.js';
import { SERIALIZER, type Serializer } from '../common/serializer.js';
import { RedisConnections } from '../connection/redis-connections.js';
import { PUBSUB_OPTIONS, type ResolvedPubSubOptions } from './pubsub.options.js';
import { PubSubService } from './pubsub.service.js';

/**
 * The PubSubService on the cache's connection, for the L1 invalidation bus: instances that share a cache must hear
 * each other's invalidations on the Redis that holds the cache's data, whichever connection `pubsub` runs on. The
 * shared PubSubService when both run on one connection (one subscriber connection per app instance).
 */
export const CACHE_L1_PUBSUB = Symbol('CACHE_L1_PUBSUB');

export const PUBSUB_PROVIDERS: Provider[] = [
  PubSubService,
  {
    provide: CACHE_L1_PUBSUB,
    useFactory: (
      connections: RedisConnections,
      shared: PubSubService,
      options: ResolvedPubSubOptions,
      serializer: Serializer,
      keys: KeyBuilder,
    ) => {
      const cache = connections.forFeature('cache');
      if (cache === connections.forFeature('pubsub')) return shared;
      return new PubSubService(cache, options, serializer, keys);
    },
    inject: [RedisConnections, PubSubService, PUBSUB_OPTIONS, SERIALIZER, KeyBuilder],
  },
];
export const PUBSUB_EXPORTS = [PubSubService];
