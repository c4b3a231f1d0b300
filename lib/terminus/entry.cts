// The CommonJS gate of `nestjs-redis-toolkit/terminus` (package.json exports "require"; its types are index.ts's):
// MissingPeerError when @nestjs/terminus is not installed, then index.ts (require(esm)).
// entry.ts is the gate for import; common/optional-peers.ts says why there are two.
import peers = require('../common/optional-peers.js');

peers.checkPeers('nestjs-redis-toolkit/terminus', ['@nestjs/terminus']);

import terminus = require('./index.js');

export = terminus;
