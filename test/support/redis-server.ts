// The server harness ships to users as `nestjs-redis-toolkit/testing` (lib/testing/); our tests use the same code.
export * from '../../lib/testing/testing.redis-server.js';
