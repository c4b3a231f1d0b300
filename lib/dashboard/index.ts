// `nestjs-redis-toolkit/dashboard`: the live dashboard, on its own subpath so that an app that does not import it
// loads none of it (no timer, no diagnostics subscriber, no route).
export { RedisToolkitDashboardModule } from './dashboard.module.js';
export { DashboardUnguardedError, type RedisToolkitDashboardOptions } from './dashboard.options.js';
export { DashboardService, type DashboardEvent } from './dashboard.service.js';
export type { DashboardFrame, RedisSample } from './dashboard.frame.js';
export type { DashboardSnapshot } from './dashboard.aggregator.js';
