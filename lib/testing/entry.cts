// The CommonJS gate of `nestjs-redis-toolkit/testing` (package.json exports "require"; its types are index.ts's):
// MissingPeerError when @nestjs/testing is not installed, then index.ts (require(esm)).
// entry.ts is the gate for import; common/optional-peers.ts says why there are two.
import peers = require('../common/optional-peers.js');

peers.checkPeers('nestjs-redis-toolkit/testing', ['@nestjs/testing']);

import testing = require('./index.js');

export = testing;
