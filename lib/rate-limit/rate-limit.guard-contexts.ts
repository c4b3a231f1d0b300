/**
 * Where RateLimitGuard finds what it limits outside plain HTTP: the request and response of a GraphQL resolver, what
 * one charge of a counter covers in each kind of context (an HTTP request, a GraphQL field, a Socket.IO message), and
 * which methods are resolver or gateway handlers (for the start-up checks).
 */
import type { ExecutionContext } from '@nestjs/common';
import { UnsupportedContextError } from '../common/errors.js';
import type { ThrottledRequest, ThrottledResponse } from './rate-limit.guard.js';

/** The GraphQL context a @nestjs/graphql driver passes to a resolver (third argument): Apollo and Mercurius shapes. */
interface GraphqlContext {
  req?: ThrottledRequest & { res?: ThrottledResponse };
  request?: ThrottledRequest;
  res?: ThrottledResponse;
  reply?: ThrottledResponse & { request?: ThrottledRequest };
}

export function graphqlRequestResponse(context: ExecutionContext): {
  req: ThrottledRequest;
  res: ThrottledResponse | undefined;
} {
  const gql = context.getArgByIndex<GraphqlContext | undefined>(2);
  const found = gql?.req ?? gql?.request ?? gql?.reply?.request;
  const req: (ThrottledRequest & { res?: ThrottledResponse }) | undefined = upgradeRequestOf(found) ?? found;
  if (!req || typeof req !== 'object') {
    throw new UnsupportedContextError(
      `RateLimitGuard found no request in the GraphQL context of ` +
        `${context.getClass().name}.${context.getHandler().name}: ` +
        'keep `req` in the context your GraphQL driver builds (the default), or override getRequestResponse',
    );
  }
  return { req, res: gql?.res ?? gql?.reply ?? req.res };
}

/**
 * A subscription over graphql-ws (Apollo's): Nest's Apollo driver puts graphql-ws's own context (`connectionParams`,
 * `extra`) where the request goes, and the HTTP request of the WebSocket upgrade (headers, socket) is its
 * `extra.request`. Read as the request, that context has no address: every subscriber was tracked as `unknown`, one
 * counter for all of them (until 2026-12-06). Mercurius gives the upgrade's request itself.
 */
function upgradeRequestOf(found: unknown): ThrottledRequest | undefined {
  if (typeof found !== 'object' || found === null || 'headers' in found) return undefined;
  const upgrade = (found as { extra?: { request?: unknown } }).extra?.request;
  return typeof upgrade === 'object' && upgrade !== null ? (upgrade as ThrottledRequest) : undefined;
}

/**
 * What one charge of a counter covers: the HTTP request, in GraphQL one resolution of a field (its `info`, unique per
 * resolution), else one call of the handler (a Socket.IO message: the arguments Nest gives every guard of that call;
 * its `req` is the handshake, shared by every message of the socket). Every field of a query is a guard run on the
 * same request: keyed by the request, a query asking for a limited resolver under 5 aliases ran it 5 times for one
 * charge, and ran the aliases after a refused one.
 */
export function chargeScopeOf(context: ExecutionContext, req: object): object | undefined {
  const type = context.getType<string>();
  if (type === 'http') return req;
  if (type === 'graphql') {
    const info: unknown = context.getArgByIndex(3);
    return typeof info === 'object' && info !== null ? info : req;
  }
  // a context built by hand (a custom transport's) may have no arguments to key by: each guard run then charges
  const args: unknown = typeof context.getArgs === 'function' ? context.getArgs() : undefined;
  return typeof args === 'object' && args !== null ? args : undefined;
}

/**
 * The method metadata that makes a GraphQL resolver's or a Socket.IO gateway's handler: @nestjs/graphql's @Query,
 * @Mutation and @Subscription (`graphql:resolver_type`), @ResolveField (`graphql:resolve_property`) and
 * @ResolveReference, and @nestjs/websockets' @SubscribeMessage. Read by name, as graphqlRequestResponse reads a
 * resolver's arguments: both packages are optional peers, never imported here (test/rate-limit/
 * refund-options-start.spec.ts holds the names to the packages' constants).
 */
export const HANDLER_METADATA = {
  graphql: ['graphql:resolver_type', 'graphql:resolve_property', 'graphql:resolve_reference'],
  ws: ['websockets:message_mapping'],
} as const;

/** The context type a method is called in when it is a resolver's or a gateway's handler; else undefined. */
export function handlerContextOf(method: object): 'graphql' | 'ws' | undefined {
  if (HANDLER_METADATA.graphql.some((key) => Reflect.getMetadata(key, method))) return 'graphql';
  if (HANDLER_METADATA.ws.some((key) => Reflect.getMetadata(key, method))) return 'ws';
  return undefined;
}
