export { RateLimitService } from './rate-limit.service.js';
export type {
  RateLimitResult,
  RateLimitCheck,
  RateLimitDecision,
  RateLimitStats,
  ConsumeOptions,
} from './rate-limit.service.js';
export type { ResolvedPolicy } from './policy-resolver.js';
export {
  RateLimitGuard,
  RateLimitHttpException,
  type ThrottledRequest,
  type ThrottledResponse,
  type ThrottlingDetail,
} from './rate-limit.guard.js';
export {
  Throttle,
  SkipThrottle,
  THROTTLE_METADATA,
  SKIP_THROTTLE_METADATA,
  type NamedThrottleOptions,
} from './rate-limit.decorators.js';
export { ClientAddressResolver } from './client-address.js';
export type {
  RateLimitOptions,
  RateLimitPolicy,
  RateLimitAlgorithm,
  ThrottleOptions,
  Resolvable,
  TrustProxy,
  RateLimitHeaders,
  RateLimitInsuranceOptions,
} from './rate-limit.options.js';
