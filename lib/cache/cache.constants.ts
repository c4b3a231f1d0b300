/** Metadata key written by @Cacheable / @CachePut / @CacheEvict (a list of operations). */
export const CACHE_METADATA = 'rtk:cache:operations';
/** Metadata keys of HttpCacheInterceptor's decorators: @CacheKey, @CacheTTL, @CacheIf, @CacheShared. */
export const HTTP_CACHE_KEY_METADATA = 'rtk:cache:http-key';
export const HTTP_CACHE_TTL_METADATA = 'rtk:cache:http-ttl';
export const HTTP_CACHE_IF_METADATA = 'rtk:cache:http-if';
export const HTTP_CACHE_SHARED_METADATA = 'rtk:cache:http-shared';
