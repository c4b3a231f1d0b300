import type { Provider } from '@nestjs/common';
import { ThrottlePolicyCheck } from './rate-limit.decorators.js';
import { RateLimitGuard } from './rate-limit.guard.js';
import { ThrottlerPeerCheck } from './rate-limit.peer-metadata.js';
import { RateLimitService } from './rate-limit.service.js';

export const RATE_LIMIT_PROVIDERS: Provider[] = [
  RateLimitService,
  RateLimitGuard,
  ThrottlePolicyCheck,
  ThrottlerPeerCheck,
];
export const RATE_LIMIT_EXPORTS = [RateLimitService, RateLimitGuard];
