export {
  PubSubService,
  type MessageHandler,
  type MessageMeta,
  type ReplayedMessage,
  type Unsubscribe,
} from './pubsub.service.js';
export type {
  PubSubOptions,
  PubSubDurableOptions,
  PubSubUser,
  NotificationsGatewayOptions,
  GatewayHandshake,
  GatewayAuthenticate,
  GatewayAuthorize,
  GatewayRateLimiter,
  SlowClientPolicy,
} from './pubsub.options.js';
