import type { Provider, Type } from '@nestjs/common';
import type { MethodInterceptor } from '../common/method-interception.js';
import { LockMethodInterceptor } from './lock.method-interceptor.js';
import { LockService } from './lock.service.js';

/** Applied by the MethodInterceptionExplorer to methods carrying their decorators' metadata. */
export const LOCK_METHOD_INTERCEPTORS: Type<MethodInterceptor>[] = [LockMethodInterceptor];
export const LOCK_PROVIDERS: Provider[] = [LockService, ...LOCK_METHOD_INTERCEPTORS];
export const LOCK_EXPORTS = [LockService];
