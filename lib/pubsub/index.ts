export {
  PubSubService,
  type MessageHandler,
  type MessageMeta,
  type ReplayedMessage,
  type Unsubscribe,
} from './pubsub.service.js';
export type { PubSubOptions, PubSubDurableOptions } from './pubsub.options.js';
// The gateway's option types (for `pubsub.gateway`); the gateway itself is on `nestjs-redis-toolkit/notifications`.
export type {
  PubSubUser,
  NotificationsGatewayOptions,
  GatewayHandshake,
  GatewayAuthenticate,
  GatewayAuthorize,
  GatewayRateLimiter,
  SlowClientPolicy,
} from '../notifications/notifications.options.js';
