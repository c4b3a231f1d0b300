export {
  CacheService,
  CACHE_L1_CHANNEL,
  type CacheSetOptions,
  type CacheGetOrSetOptions,
  type CacheTags,
  type CacheResult,
  type CacheStatus,
  type CacheStats,
  type InvalidateTagsOptions,
} from './cache.service.js';
export {
  Cacheable,
  CachePut,
  CacheEvict,
  type CacheableOptions,
  type CachePutOptions,
  type CacheEvictOptions,
} from './cache.decorators.js';
export type { CacheOptions, CacheL1Options } from './cache.options.js';
