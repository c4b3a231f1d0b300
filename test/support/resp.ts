// The raw RESP client lives with the server harness in lib/testing/ (shipped as `nestjs-redis-toolkit/testing`).
export * from '../../lib/testing/testing.resp.js';
