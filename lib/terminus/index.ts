// nestjs-redis-toolkit/terminus: a @nestjs/terminus health indicator (docs/observability.md). Needs the optional peer
// @nestjs/terminus; the package root never imports it.
export { RedisToolkitHealthIndicator } from './redis-toolkit.health-indicator.js';
