// The CommonJS gate of `nestjs-redis-toolkit/notifications` (package.json exports "require"; its types are index.ts's):
// MissingPeerError when @nestjs/websockets (which the gateway imports) is not installed, then index.ts (require(esm)).
// entry.ts is the gate for import; common/optional-peers.ts says why there are two.
import peers = require('../common/optional-peers.js');
import providers = require('./notifications.providers.js');

peers.checkPeers('nestjs-redis-toolkit/notifications', ['@nestjs/websockets'], providers.GATEWAY_PEERS);

import notifications = require('./index.js');

export = notifications;
