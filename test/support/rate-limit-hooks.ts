/**
 * The RateLimitGuard subclass of the guard hook specs (guard-hooks.hostile.spec.ts, guard-hooks-throw.spec.ts): every
 * protected hook overridden, each routed through the spec's `run`, which makes the hook of the running case throw,
 * reject or give a value and lets the others do what the default does.
 */
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import type { ExecutionContext } from '@nestjs/common';
import { GraphQLModule } from '@nestjs/graphql';
import { MercuriusDriver, type MercuriusDriverConfig } from '@nestjs/mercurius';
import { RateLimitGuard, type RedisUnavailableError } from '../../lib/index.js';
import type { RateLimitDecision, ThrottledRequest, ThrottledResponse, ThrottlingDetail } from '../../lib/advanced.js';
import type { Platform } from './toolkit-app.js';

/** The protected hooks of RateLimitGuard, by their method names. */
export type GuardHook =
  | 'getTracker'
  | 'generateKey'
  | 'getRequestResponse'
  | 'throwThrottlingException'
  | 'throwDeniedException'
  | 'setResponseHeader'
  | 'setHeaders'
  | 'unavailableError';

/** What the guard does with `hook`: `base` is the default (super's; for getTracker the X-Tracker header). */
export type RunHook<H extends string> = (hook: H, base: () => unknown) => unknown;

/** The tracker of a request: its X-Tracker header (HTTP, GraphQL's req, the Socket.IO handshake). */
export function trackerOf(req: ThrottledRequest | undefined): string {
  const h = req?.headers?.['x-tracker'];
  return (Array.isArray(h) ? h[0] : h) as string;
}

/**
 * A RateLimitGuard whose every protected hook is `run(hook, base)`. `retryAfter`, when given, is the hook name of the
 * setResponseHeader call that writes Retry-After (a spec that fails that write alone). Subclass it in the spec,
 * `@Injectable() class HookGuard extends hookRoutedGuard(run) {}`: the guard's messages name that class.
 */
export function hookRoutedGuard<H extends string = never>(
  run: RunHook<GuardHook | H>,
  retryAfter?: H,
): typeof RateLimitGuard {
  const route = <T>(hook: GuardHook | H, base: () => unknown): T => run(hook, base) as T;
  class HookRoutedGuard extends RateLimitGuard {
    protected override getTracker(req: ThrottledRequest, _context: ExecutionContext): Promise<string> {
      return route('getTracker', () => Promise.resolve(trackerOf(req)));
    }
    protected override generateKey(context: ExecutionContext, tracker: string, name: string): string {
      return route('generateKey', () => super.generateKey(context, tracker, name));
    }
    protected override getRequestResponse(context: ExecutionContext): {
      req: ThrottledRequest;
      res: ThrottledResponse | undefined;
    } {
      return route('getRequestResponse', () => super.getRequestResponse(context));
    }
    protected override throwThrottlingException(context: ExecutionContext, detail: ThrottlingDetail): Promise<void> {
      return route('throwThrottlingException', () => super.throwThrottlingException(context, detail));
    }
    protected override throwDeniedException(context: ExecutionContext): Promise<never> {
      return route('throwDeniedException', () => super.throwDeniedException(context));
    }
    protected override setResponseHeader(
      res: ThrottledResponse,
      name: string,
      value: string | number,
    ): void | Promise<void> {
      const hook = retryAfter !== undefined && name === 'Retry-After' ? retryAfter : 'setResponseHeader';
      return route(hook, () => super.setResponseHeader(res, name, value));
    }
    protected override setHeaders(res: ThrottledResponse, decision: RateLimitDecision): void | Promise<void> {
      return route('setHeaders', () => super.setHeaders(res, decision));
    }
    protected override unavailableError(context: ExecutionContext, err: RedisUnavailableError): Promise<Error> {
      return route('unavailableError', () => super.unavailableError(context, err));
    }
  }
  return HookRoutedGuard;
}

/** The GraphQL module of a platform's app: Apollo on Express, Mercurius on Fastify, schema from the resolvers. */
export function graphqlModule(platform: Platform) {
  return platform === 'express'
    ? GraphQLModule.forRoot<ApolloDriverConfig>({ driver: ApolloDriver, autoSchemaFile: true })
    : GraphQLModule.forRoot<MercuriusDriverConfig>({ driver: MercuriusDriver, autoSchemaFile: true });
}
