// `nestjs-redis-toolkit/notifications`: the Socket.IO gateway, kept out of the root entry point so that apps without
// the optional peers @nestjs/websockets and socket.io never load them.
export { NotificationsGateway, type NotificationsGatewayStats } from './notifications.gateway.js';
export type { NotificationAck, NotificationMessage } from './notification-protocol.js';
export { NotificationsGatewayModule, type NotificationsGatewayModuleOptions } from './notifications-gateway.module.js';
export { sessionAuthenticate, type SessionLookup } from './session-authenticate.js';
