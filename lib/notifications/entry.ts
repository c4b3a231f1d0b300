// The ES module gate of `nestjs-redis-toolkit/notifications` (package.json exports "default"; its types are
// index.ts's): MissingPeerError when @nestjs/websockets (which the gateway imports) is not installed, then index.ts, by
// a dynamic import so that its static import of the peer cannot fail first (common/optional-peers.ts). Its names are
// index.ts's, one by one (test/package/run.mjs compares them). entry.cts is the gate for require().
import { checkPeers } from '../common/optional-peers.js';
import { GATEWAY_PEERS } from './notifications.providers.js';

checkPeers('nestjs-redis-toolkit/notifications', ['@nestjs/websockets'], GATEWAY_PEERS);

const notifications = await import('./index.js');

export const { NotificationsGateway, NotificationsGatewayModule, sessionAuthenticate } = notifications;
