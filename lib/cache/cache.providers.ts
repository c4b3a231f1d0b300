import type { Provider, Type } from '@nestjs/common';
import type { MethodInterceptor } from '../common/method-interception.js';
import { CacheMethodInterceptor } from './cache.method-interceptor.js';
import { CacheService } from './cache.service.js';

/** Applied by the MethodInterceptionExplorer to methods carrying their decorators' metadata. */
export const CACHE_METHOD_INTERCEPTORS: Type<MethodInterceptor>[] = [CacheMethodInterceptor];
export const CACHE_PROVIDERS: Provider[] = [CacheService, ...CACHE_METHOD_INTERCEPTORS];
export const CACHE_EXPORTS = [CacheService];
