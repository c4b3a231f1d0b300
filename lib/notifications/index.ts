// `nestjs-redis-toolkit/notifications`: the Socket.IO gateway, kept out of the root entry point so that apps without
// the optional peers @nestjs/websockets and socket.io never load them.
export { NotificationsGateway, type NotificationsGatewayStats } from './notifications.gateway.js';
export type { NotificationAck, NotificationMessage } from './notifications.protocol.js';
export { NotificationsGatewayModule, type NotificationsGatewayModuleOptions } from './notifications.module.js';
export type {
  GatewayAuthenticate,
  GatewayAuthorize,
  GatewayHandshake,
  GatewayRateLimiter,
  NotificationsGatewayOptions,
  PubSubUser,
  SlowClientPolicy,
} from './notifications.options.js';
export { sessionAuthenticate, type SessionLookup } from './notifications.session-authenticate.js';
