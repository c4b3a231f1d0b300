import {
  ForbiddenException,
  HttpException,
  HttpStatus,
  Inject,
  Injectable,
  Logger,
  Optional,
  ServiceUnavailableException,
  type CanActivate,
  type ExecutionContext,
} from '@nestjs/common';
import { ModulesContainer, Reflector } from '@nestjs/core';
import {
  InvalidKeyError,
  InvalidOptionsError,
  RedisUnavailableError,
  UnsupportedContextError,
} from '../common/errors.js';
import { ClientAddressResolver, UNKNOWN_CLIENT } from './rate-limit.client-address.js';
import { AccessList, accessListsOf } from './rate-limit.access-list.js';
import { ProxyHeaderWarnings } from './rate-limit.proxy-warnings.js';
import { retryAfterSeconds, writeRateLimitHeaders } from './rate-limit.headers.js';
import { appliedPolicies, type NamedThrottleOptions } from './rate-limit.decorators.js';
import { RATE_LIMIT_OPTIONS, type Resolvable, type ResolvedRateLimitOptions } from './rate-limit.options.js';
import { RateLimitService, type RateLimitCheck, type RateLimitDecision } from './rate-limit.service.js';
import { shownValue } from '../common/option-checks.js';
import { wsException } from '../common/optional-peers.js';
import { classNameOf } from './rate-limit.class-names.js';
import { checkScope } from './rate-limit.option-names.js';
import {
  checkedRequestResponse,
  checkedTracker,
  checkResolvedPolicy,
  hookReturned,
  isResolvedPerRequest,
  refundableHere,
} from './rate-limit.guard-checks.js';
import { chargeScopeOf, graphqlRequestResponse } from './rate-limit.guard-contexts.js';
import { refundOnFinish, unchargedChecks } from './rate-limit.guard-charges.js';

/** The parts of an HTTP request (Express or Fastify) or a WebSocket handshake the guard reads. */
export interface ThrottledRequest {
  headers?: Record<string, string | string[] | undefined>;
  /** `server`: the server that accepted it (a unix socket's has a path for its address, and its peers none). */
  socket?: { remoteAddress?: string; server?: { address?(): unknown } };
  /** Socket.IO handshake address. */
  address?: string;
}

/** The parts of an HTTP response the guard writes to (Express `setHeader`, Fastify `header`); absent for WebSockets. */
export interface ThrottledResponse {
  setHeader?(name: string, value: string | number): unknown;
  header?(name: string, value: string | number): unknown;
}

/** What throwThrottlingException gets: the decision, with the wait before the request would be allowed. */
export interface ThrottlingDetail {
  retryAfterMs: number;
  decision: RateLimitDecision;
}

/** The JSON body of a 429: `{ statusCode: 429, message, retryAfterMs }`. */
export class RateLimitHttpException extends HttpException {
  constructor(
    readonly retryAfterMs: number,
    message = 'Too Many Requests',
  ) {
    super({ statusCode: HttpStatus.TOO_MANY_REQUESTS, message, retryAfterMs }, HttpStatus.TOO_MANY_REQUESTS);
  }
}

/**
 * Applies the @Throttle policies of a handler (else of its controller, else `rateLimit.defaults`) to HTTP requests,
 * Socket.IO `@SubscribeMessage` handlers and GraphQL resolvers. Use per controller (`@UseGuards(RateLimitGuard)`) or
 * for the whole app (`{ provide: APP_GUARD, useClass: RateLimitGuard }`). Customise by subclassing: getTracker (who),
 * generateKey (which counter), getRequestResponse (where from), throwThrottlingException and throwDeniedException
 * (how to refuse), setResponseHeader and setHeaders (which headers), unavailableError (what Redis down answers).
 * What an override gives is checked: a value of the wrong type is a typed error naming it, and a refusal stands even
 * when a throw* override returns instead of throwing (docs/rate-limit.md, Customising the guard).
 */
@Injectable()
export class RateLimitGuard implements CanActivate {
  protected readonly options: ResolvedRateLimitOptions;
  protected readonly addresses: ClientAddressResolver;
  private readonly allowList: AccessList;
  private readonly denyList: AccessList;
  private readonly proxyWarnings: ProxyHeaderWarnings;
  /** The app's modules, for classNameOf; a property, so a subclass keeps its own constructor. */
  @Optional() @Inject(ModulesContainer) private readonly modules?: ModulesContainer;

  constructor(
    protected readonly rateLimit: RateLimitService,
    protected readonly reflector: Reflector,
    @Inject(RATE_LIMIT_OPTIONS) options: ResolvedRateLimitOptions,
  ) {
    this.options = options;
    this.addresses = new ClientAddressResolver(this.options.trustProxy, this.options.ipv6Subnet);
    this.allowList = new AccessList(this.options.allowList);
    this.denyList = new AccessList(this.options.denyList);
    this.proxyWarnings = new ProxyHeaderWarnings(this.addresses, new Logger('RedisToolkit:RateLimit'));
  }

  async canActivate(context: ExecutionContext): Promise<boolean> {
    // the rules ThrottlePolicyCheck applies at start (handler's @Throttle, else class's, else defaults; less skips)
    let policies = appliedPolicies(this.reflector, context.getHandler(), context.getClass(), this.options.defaults);
    if (policies.length === 0) return true;
    const { req, res } = checkedRequestResponse(this.getRequestResponse(context), this);
    let tracker: string | undefined;
    const lists = policies.map(accessListsOf);
    // the deny lists first: neither skipIf nor a User-Agent (which the client chooses) lets a denied tracker in
    if (!this.denyList.empty || !this.allowList.empty || lists.some((l) => l.allow || l.deny)) {
      const who = (tracker = checkedTracker(await this.getTracker(req, context), this));
      if (this.denyList.has(who) || lists.some((l) => l.deny?.has(who))) {
        await this.throwDeniedException(context);
        // an override that returned (an async one that forgot `throw`) must not let a denied tracker in: refused with
        // the default answer, and said once (@nestjs/throttler would have let it through, even past the allow list)
        hookReturned(this, 'throwDeniedException', '403');
        await RateLimitGuard.prototype.throwDeniedException.call(this, context);
      }
      if (this.allowList.has(who)) return true;
      // a policy that allows the tracker is not counted; the others still are
      policies = policies.filter((_, i) => lists[i].allow?.has(who) !== true);
      if (policies.length === 0) return true;
    }
    if (this.options.skipIf) {
      const skip: unknown = await this.options.skipIf(context);
      // only true skips: a truthy 'false', 1 or an object skipped uncounted. undefined and null count the request, as
      // false does (`req.user?.isInternal` for a request without a user): the safe side, the request is limited.
      if (skip === true) return true;
      if (skip !== false && skip !== undefined && skip !== null) {
        throw new InvalidOptionsError(
          `rateLimit.skipIf must return true or false (or a Promise of one), got ${shownValue(skip)}`,
        );
      }
    }
    if (this.options.ignoreUserAgents.length > 0) {
      const ua = req.headers?.['user-agent'];
      const agent = Array.isArray(ua) ? ua[0] : ua;
      if (agent !== undefined && this.options.ignoreUserAgents.some((r) => matches(r, agent))) return true;
    }

    let failOpen: boolean | undefined;
    const checks: RateLimitCheck[] = [];
    const refunds = new Map<RateLimitCheck, NamedThrottleOptions>();
    for (const p of policies) {
      let key: unknown;
      if (p.key === undefined) key = tracker ??= checkedTracker(await this.getTracker(req, context), this);
      else key = typeof p.key === 'function' ? await p.key(context) : p.key;
      if (typeof key !== 'string' || key.length === 0) {
        throw new InvalidKeyError(
          `the key of rate-limit policy "${p.name}" must be a non-empty string, got ${shownValue(key)}`,
        );
      }
      const [limit, ttl, algorithm, burst, cost, blockDuration] = await Promise.all([
        resolve(p.limit, context),
        resolve(p.ttl, context),
        resolve(p.algorithm, context),
        resolve(p.burst, context),
        resolve(p.cost, context),
        resolve(p.blockDuration, context),
      ]);
      if (isResolvedPerRequest(p)) {
        checkResolvedPolicy(context, p.name, { limit, ttl, algorithm, burst, cost, blockDuration }, this.options);
      }
      const scope: unknown = this.generateKey(context, key, p.name);
      // an override's result, before unchargedChecks hashes it (where 42 was a bare TypeError of node:crypto);
      // undefined is the unscoped counter, as for the service
      if (typeof scope !== 'string' && scope !== undefined) {
        const where = `${this.constructor.name}.generateKey for rate-limit policy "${p.name}"`;
        // an `async generateKey`: refused, and its rejection (if any) handled here rather than left unhandled
        if (scope instanceof Promise) {
          scope.catch(() => undefined);
          throw new InvalidOptionsError(`${where} returned a Promise: generateKey is synchronous, return the scope`);
        }
        checkScope(scope, where);
      }
      const check: RateLimitCheck = {
        key,
        name: p.name,
        scope,
        policy: { limit, ttl, algorithm, burst, cost, blockDuration },
      };
      checks.push(check);
      if (p.skipSuccessfulRequests || p.skipFailedRequests) {
        refundableHere(context, p);
        refunds.set(check, p);
      }
      if (p.failOpen !== undefined) failOpen = failOpen === false ? false : p.failOpen;
    }
    // APP_GUARD plus a guard on the controller (or gateway, or resolver) run for one request, message or field: each
    // counter is charged once, but every counter either guard names is charged (a second guard with its own counter is
    // not skipped). Until 2026-12-06 only a call with a response was kept: a Socket.IO message was charged per guard.
    const chargeScope = chargeScopeOf(context, req);
    if (chargeScope) {
      const pending = unchargedChecks(this.rateLimit, this.options.defaults.algorithm, chargeScope, checks);
      if (pending.length === 0) return true;
      checks.splice(0, checks.length, ...pending);
    }

    let decision: RateLimitDecision;
    // before the call: a charge's window (resetMs) is timed from here, so it is never thought open longer than it is
    const chargedAt = performance.now();
    try {
      decision = await this.rateLimit.consumeAll(checks, failOpen === undefined ? {} : { failOpen });
    } catch (err) {
      if (!(err instanceof RedisUnavailableError)) throw err;
      const answer: unknown = await this.unavailableError(context, err);
      // `throw await` threw whatever it gave: undefined or 42 reached the exception filter as a nameless 500
      if (answer instanceof Error) throw answer;
      throw new InvalidOptionsError(
        `${this.constructor.name}.unavailableError must return the Error to throw (or a Promise of one), ` +
          `got ${shownValue(answer)}`,
        { cause: err },
      );
    }
    // the refunds are armed before any hook runs after the charge: a setHeaders that throws fails the response, and a
    // skipFailedRequests charge is given back for it as for any failed response (until 2026-12-06 it was kept). A
    // charge insurance made is given back to insurance (its result says so; until 2026-12-06 it was kept); a decision
    // that failed open charged nothing to give back.
    if (decision.allowed && decision.degraded !== 'fail-open' && res && refunds.size > 0) {
      refundOnFinish(
        this.rateLimit,
        res,
        checks
          .filter((c) => refunds.has(c))
          .map((c) => {
            const result = decision.results.find((r) => r.name === c.name);
            return {
              check: c,
              options: refunds.get(c) as NamedThrottleOptions,
              openUntil: chargedAt + (result?.resetMs ?? 0),
              insured: result?.degraded === 'insurance',
            };
          }),
      );
    }
    // an `async` override (TypeScript takes one for these void hooks) is awaited: its headers are written before the
    // response is, and its error reaches the client instead of being an unhandled rejection
    if (res && decision.degraded !== 'fail-open') {
      const written: unknown = this.setHeaders(res, decision);
      if (written instanceof Promise) await written;
    }
    if (!decision.allowed) {
      const retryAfterMs = Math.max(1, decision.retryAfterMs);
      if (res) {
        const written: unknown = this.setResponseHeader(res, 'Retry-After', retryAfterSeconds(retryAfterMs));
        if (written instanceof Promise) await written;
      }
      await this.throwThrottlingException(context, { retryAfterMs, decision });
      // an override that returned (an async one that forgot `throw`, a "log only" one) must not admit a refused
      // request: refused with the default answer, and said once (@nestjs/throttler would have let it through)
      hookReturned(this, 'throwThrottlingException', '429');
      await RateLimitGuard.prototype.throwThrottlingException.call(this, context, { retryAfterMs, decision });
    }
    return true;
  }

  /**
   * Who is limited: the client address (X-Forwarded-For only with `trustProxy`), IPv6 grouped by /64. Warns once when
   * the proxy headers say every client may be sharing one counter (ProxyHeaderWarnings).
   */
  protected async getTracker(req: ThrottledRequest, _context: ExecutionContext): Promise<string> {
    const socketAddress = req.socket?.remoteAddress ?? req.address;
    const forwardedFor = req.headers?.['x-forwarded-for'];
    // a unix socket's (or a named pipe's) connection has no address: its peer is a proxy on this host
    const pipe = socketAddress === undefined && typeof req.socket?.server?.address?.() === 'string';
    this.proxyWarnings.check(socketAddress, forwardedFor, req.headers, pipe);
    const tracker = this.addresses.resolve(socketAddress, forwardedFor, pipe);
    if (tracker === UNKNOWN_CLIENT) this.proxyWarnings.noAddress(pipe);
    return tracker;
  }

  /**
   * Which counter of the tracker a policy uses. The tracker is already the counter's hash tag, so by default this is
   * the route (controller and handler) and the policy name. Hashed before it goes into a key. A class whose name
   * another class of the app has is named with where it is routed (classNameOf): counters of its own.
   */
  protected generateKey(context: ExecutionContext, _tracker: string, name: string): string {
    return `${classNameOf(this.modules, context.getClass())}.${context.getHandler().name}:${name}`;
  }

  /**
   * HTTP: the request and response; WebSocket: the Socket.IO handshake (address, headers) and no response; GraphQL
   * (`@nestjs/graphql`, read from the resolver's context argument without importing it): the `req` of the GraphQL
   * context and its `res` (Apollo), `reply` (Mercurius) or the request's `res` (Express). Any other context type
   * (rpc, a custom transport) is refused with UnsupportedContextError: override this method to support it.
   */
  protected getRequestResponse(context: ExecutionContext): {
    req: ThrottledRequest;
    res: ThrottledResponse | undefined;
  } {
    const type = context.getType<string>();
    if (type === 'graphql') return graphqlRequestResponse(context);
    if (type !== 'http' && type !== 'ws') {
      throw new UnsupportedContextError(
        `RateLimitGuard cannot read a "${type}" execution context ` +
          `(${context.getClass().name}.${context.getHandler().name}): ` +
          'override getRequestResponse to support it, or mark the handler @SkipThrottle()',
      );
    }
    if (type === 'ws') {
      const client = context
        .switchToWs()
        .getClient<{ handshake?: ThrottledRequest; _socket?: { remoteAddress?: string } }>();
      return { req: client.handshake ?? { socket: client._socket }, res: undefined };
    }
    const http = context.switchToHttp();
    return { req: http.getRequest<ThrottledRequest>(), res: http.getResponse<ThrottledResponse>() };
  }

  /** Refuses the request: HTTP 429 `{ statusCode, message, retryAfterMs }`, or a WsException with the same payload. */
  protected async throwThrottlingException(context: ExecutionContext, detail: ThrottlingDetail): Promise<void> {
    const configured = this.options.errorMessage;
    const message: unknown = typeof configured === 'function' ? configured(context, detail.retryAfterMs) : configured;
    if (typeof message !== 'string') {
      // a refusal whose message was 42, an object or missing, without a word
      if (message instanceof Promise) message.catch(() => undefined);
      throw new InvalidOptionsError(`rateLimit.errorMessage must return a string, got ${shownValue(message)}`);
    }
    if (context.getType<string>() === 'ws') {
      throw await wsException({
        statusCode: HttpStatus.TOO_MANY_REQUESTS,
        message: message,
        retryAfterMs: detail.retryAfterMs,
      });
    }
    throw new RateLimitHttpException(detail.retryAfterMs, message);
  }

  /**
   * Refuses a tracker on `rateLimit.denyList` or on the `denyList` of a policy of the route: HTTP 403 Forbidden (no
   * Retry-After: waiting does not help), or a WsException with the same payload.
   */
  protected async throwDeniedException(context: ExecutionContext): Promise<never> {
    const body = { statusCode: HttpStatus.FORBIDDEN, message: 'Forbidden' };
    if (context.getType<string>() === 'ws') throw await wsException(body);
    throw new ForbiddenException(body);
  }

  protected setResponseHeader(res: ThrottledResponse, name: string, value: string | number): void {
    if (typeof res.setHeader === 'function') res.setHeader(name, value);
    else if (typeof res.header === 'function') res.header(name, value);
  }

  /**
   * The rate-limit headers in the `rateLimit.headers` style (see writeRateLimitHeaders). An `async` setResponseHeader
   * override is awaited (its promises are returned, and the guard awaits them).
   */
  protected setHeaders(res: ThrottledResponse, decision: RateLimitDecision): void | Promise<void> {
    let pending: Promise<unknown>[] | undefined;
    writeRateLimitHeaders(this.options.headers, decision, (name, value) => {
      const written: unknown = this.setResponseHeader(res, name, value);
      if (written instanceof Promise) (pending ??= []).push(written);
    });
    if (pending) return Promise.all(pending).then(() => undefined);
  }

  /** Redis down with failOpen: false: HTTP 503, or a WsException with the same payload. */
  protected async unavailableError(context: ExecutionContext, err: RedisUnavailableError): Promise<Error> {
    const body = {
      statusCode: HttpStatus.SERVICE_UNAVAILABLE,
      message: 'Rate limiting is unavailable, try again later',
    };
    if (context.getType<string>() === 'ws') return wsException(body);
    return new ServiceUnavailableException(body, { cause: err });
  }
}

async function resolve<T>(value: Resolvable<T> | undefined, context: ExecutionContext): Promise<T> {
  return (typeof value === 'function' ? await (value as (c: ExecutionContext) => T | Promise<T>)(context) : value) as T;
}

/**
 * Whether a user agent matches a pattern from its start: a `g` or `y` pattern's test() starts at the lastIndex its
 * previous match left, so every other request of a matching agent was counted (until 2026-12-06).
 */
function matches(pattern: RegExp, agent: string): boolean {
  if (pattern.global || pattern.sticky) pattern.lastIndex = 0;
  return pattern.test(agent);
}
