/**
 * A toolkit app with @nestjs/terminus and the toolkit's health indicator, the set-up every terminus spec repeated:
 * `check()` runs one HealthCheckService check of the indicator under the key `redis` and gives its report (a check
 * that is down rejects with a 503; its body is the report).
 */
import { HealthCheckService, TerminusModule } from '@nestjs/terminus';
import { RedisToolkitHealthIndicator } from '../../lib/terminus/index.js';
import { report } from './observability.js';
import { createToolkitApp, type ToolkitApp, type ToolkitAppOptions } from './toolkit-app.js';

export type HealthReport = Awaited<ReturnType<typeof report>>;

export interface TerminusApp {
  readonly app: ToolkitApp;
  check(): Promise<HealthReport>;
}

/**
 * Boots the app with `options`, as createToolkitApp does (their imports and providers beside terminus's); close it
 * with `closeToolkitApps()`.
 */
export async function createTerminusApp(options: ToolkitAppOptions): Promise<TerminusApp> {
  const app = await createToolkitApp({
    ...options,
    imports: [TerminusModule, ...(options.imports ?? [])],
    providers: [RedisToolkitHealthIndicator, ...(options.providers ?? [])],
  });
  const terminus = app.get(HealthCheckService);
  const indicator = app.get(RedisToolkitHealthIndicator);
  return { app, check: () => report(() => terminus.check([() => indicator.isHealthy('redis')])) };
}
