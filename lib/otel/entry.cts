// The CommonJS gate of `nestjs-redis-toolkit/otel` (package.json exports "require"; its types are index.ts's):
// MissingPeerError when @opentelemetry/api is not installed, then index.ts (require(esm)).
// entry.ts is the gate for import; common/optional-peers.ts says why there are two.
import peers = require('../common/optional-peers.js');

peers.checkPeers('nestjs-redis-toolkit/otel', ['@opentelemetry/api']);

import otel = require('./index.js');

export = otel;
