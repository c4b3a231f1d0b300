import {
  type CanActivate,
  type ExecutionContext,
  ForbiddenException,
  Inject,
  Injectable,
  Logger,
  type OnModuleDestroy,
} from '@nestjs/common';
import { shownValue } from '../common/option-checks.js';
import { ThrottledWarning } from '../common/throttled-logger.js';
import { hostNameOf, isAllowedHost } from './dashboard.hosts.js';
import { DASHBOARD_OPTIONS, type ResolvedDashboardOptions } from './dashboard.options.js';

/**
 * Answers only requests whose Host is loopback or listed in `allowedHosts`, on every dashboard route: it runs before
 * the app's `guard`. Against DNS rebinding: a page on an attacker's domain whose name is then made to resolve to
 * 127.0.0.1 (or an internal address) is same-origin with whatever serves that port, and reads it from a victim's
 * browser, with the attacker's name in the Host header. On unless a guard is given without `allowedHosts` (see
 * ResolvedDashboardOptions.allowedHosts).
 */
@Injectable()
export class DashboardHostGuard implements CanActivate, OnModuleDestroy {
  private readonly warning = new ThrottledWarning(new Logger('RedisToolkit:Dashboard'));

  constructor(@Inject(DASHBOARD_OPTIONS) private readonly options: ResolvedDashboardOptions) {}

  canActivate(context: ExecutionContext): boolean {
    const allowed = this.options.allowedHosts;
    if (allowed === null) return true;
    const { headers = {} } = context.switchToHttp().getRequest<{ headers?: Record<string, unknown> }>();
    // HTTP/2 carries the host as `:authority`
    const header = headers.host ?? headers[':authority'];
    // None at all: not a browser (each sends one, and a page cannot remove it), so not a rebinding; an HTTP/1.0
    // client (a load balancer's health check) that could as well have written `Host: localhost`.
    if (header === undefined) return true;
    const name = typeof header === 'string' ? hostNameOf(header) : undefined;
    if (name !== undefined && isAllowedHost(name, allowed)) return true;
    // The refused name in the log only (JSON, cut short), never in the answer: the body is Nest's plain 403.
    this.warning.warn(
      `refused a dashboard request for Host ${shownValue(header)}: only loopback names and allowedHosts are served ` +
        '(add the name the dashboard is reached by to allowedHosts)',
    );
    throw new ForbiddenException('Host not allowed');
  }

  onModuleDestroy(): void {
    this.warning.close();
  }
}
