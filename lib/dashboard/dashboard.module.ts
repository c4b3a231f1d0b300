import { type DynamicModule, Module } from '@nestjs/common';
import { dashboardController } from './dashboard.controller.js';
import { DASHBOARD_OPTIONS, type RedisToolkitDashboardOptions, resolveDashboardOptions } from './dashboard.options.js';
import { DashboardService } from './dashboard.service.js';

/**
 * The live dashboard: `RedisToolkitDashboardModule.register({ path: '/_toolkit', guard })` beside
 * `RedisToolkitModule` (whose services it reads). Nothing of it runs unless imported. Without a `guard` (or
 * `unsafeNoAuth: true`) the app refuses to start with DashboardUnguardedError; without a guard only requests for a
 * loopback Host or one in `allowedHosts` are answered (DashboardHostGuard).
 */
@Module({})
export class RedisToolkitDashboardModule {
  static register(options: RedisToolkitDashboardOptions): DynamicModule {
    // The controller needs its path and guard as decorator arguments now; the options are checked (and the app
    // refused) when the DASHBOARD_OPTIONS provider is built at bootstrap, before any route is served.
    const path = typeof options?.path === 'string' ? options.path : '/_toolkit';
    return {
      module: RedisToolkitDashboardModule,
      controllers: [dashboardController(path, options?.guard)],
      providers: [{ provide: DASHBOARD_OPTIONS, useFactory: () => resolveDashboardOptions(options) }, DashboardService],
      exports: [DashboardService],
    };
  }
}
