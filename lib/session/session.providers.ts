import type { Provider } from '@nestjs/common';
import { SessionGuard } from './session.guard.js';
import { SessionPlatformBinding } from './session.platform.js';
import { SessionService } from './session.service.js';

// SessionMiddleware is not a provider: Nest instantiates it where it is applied (consumer.apply), and it refuses to
// start without a cookie secret, which apps that do not use it need not configure.
export const SESSION_PROVIDERS: Provider[] = [SessionService, SessionGuard, SessionPlatformBinding];
export const SESSION_EXPORTS = [SessionService, SessionGuard];
