import type { Provider, Type } from '@nestjs/common';
import type { MethodInterceptor } from '../common/method-interception.js';
import { CacheMethodInterceptor } from './cache.method-interceptor.js';
import { CachePeerCheck } from './cache.peer-metadata.js';
import { CacheService } from './cache.service.js';

/** Applied by the MethodInterceptionExplorer to methods carrying their decorators' metadata. */
export const CACHE_METHOD_INTERCEPTORS: Type<MethodInterceptor>[] = [CacheMethodInterceptor];
/** CachePeerCheck: @nestjs/cache-manager's decorators left on routes HttpCacheInterceptor intercepts. */
export const CACHE_PROVIDERS: Provider[] = [CacheService, ...CACHE_METHOD_INTERCEPTORS, CachePeerCheck];
export const CACHE_EXPORTS = [CacheService];
