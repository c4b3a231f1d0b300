/** Metadata key written by @Cacheable / @CachePut / @CacheEvict (a list of operations). */
export const CACHE_METADATA = Symbol('rtk:cache');
