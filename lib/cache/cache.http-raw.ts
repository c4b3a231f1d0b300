/**
 * How HttpCacheInterceptor hands a stored response to what runs after it: as the stored JSON text itself (raw, no
 * parse and re-serialisation per hit) where nothing between it and the wire would see the value, else as the value
 * parsed back. Read once per route; what middleware may change per response (Express's res.json, a Fastify reply's
 * serializer) is checked per response (rawFor).
 */
import { Logger } from '@nestjs/common';
import type { ApplicationConfig } from '@nestjs/core';
import { fastifyOutput, type HttpResponseLike } from './cache.http-response.js';

/** Where @UseInterceptors keeps its list (INTERCEPTORS_METADATA of @nestjs/common, not exported at its root). */
const INTERCEPTORS_METADATA = '__interceptors__';

/** A route's output, read on its first request (HttpCacheInterceptor's routeOf). */
export interface RouteOutput {
  /** Whether another interceptor runs outside this one (it gets the value: see classStored). */
  outer: boolean;
  /** Whether the stored JSON text is sent as the body (no parse and re-serialisation), unless rawFor says no. */
  raw: boolean;
  /** Express's own res.json, found on the route's first response (undefined on Fastify): see expressJson. */
  json: unknown;
  /** A Fastify response schema's serialisers by status (raw routes only): the stored text is the schema's. */
  schema: Record<string, (body: unknown) => string> | undefined;
  /** Where a Fastify reply keeps a serializer of its own (reply.serializer(fn)). */
  replySerializer: symbol | undefined;
  /** The Fastify route the choice was made for (a handler may answer several: a reply of another is parsed). */
  context: object | undefined;
  contextKey: symbol | undefined;
}

/**
 * The route's output. Raw only where nothing runs between this interceptor and the reply that could expect the value:
 * this is the route's first interceptor (global ones, then the controller's, then the route's), and the platform would
 * send JSON.stringify of the value too — no Express `json spaces` / `json replacer` / `json escape`, no res.json of the
 * app's on the response prototype, no Fastify reply serializer, no preSerialization hook (Fastify runs them only for a
 * body that is not a string), no response schema with one serialiser per content type. A Fastify response schema of
 * plain serialisers keeps the route raw: the text stored is the schema's (see schemaText), which is what Fastify sends.
 */
export function routeOutput(
  self: object,
  config: ApplicationConfig | undefined,
  cls: object,
  handler: object,
  response: HttpResponseLike,
): RouteOutput {
  const global = config?.getGlobalInterceptors() ?? [];
  const scoped = config?.getGlobalRequestInterceptors() ?? [];
  const first: unknown = [
    ...global,
    ...scoped.map((w) => w.metatype),
    ...((Reflect.getMetadata(INTERCEPTORS_METADATA, cls) as unknown[] | undefined) ?? []),
    ...((Reflect.getMetadata(INTERCEPTORS_METADATA, handler) as unknown[] | undefined) ?? []),
  ][0];
  // an instance (global) or the class (@UseInterceptors, resolved to this module's instance: this one)
  const outer = first !== self && first !== self.constructor;
  const json = expressJson(response);
  const fastify = fastifyOutput(response);
  const output: RouteOutput = {
    outer,
    raw: false,
    json,
    schema: undefined,
    replySerializer: fastify?.replySerializer,
    context: fastify?.context,
    contextKey: fastify?.contextKey,
  };
  if (outer) return output;
  const app = response.app;
  if (typeof app?.get === 'function') {
    for (const setting of ['json spaces', 'json replacer', 'json escape']) if (app.get(setting)) return output;
  }
  if (fastify !== undefined && (fastify.handsValue || fastify.schema === 'mixed')) return output;
  output.raw = true;
  output.schema = fastify?.schema as RouteOutput['schema'];
  return output;
}

/**
 * Express's own res.json: the deepest one on the response's prototype chain (express's response module; the app's
 * `app.response` above it, then the response itself, where an app or middleware may put a wrapper).
 */
function expressJson(response: HttpResponseLike): unknown {
  let json: unknown;
  for (let o: object | null = response; o !== null; o = Object.getPrototypeOf(o) as object | null) {
    if (Object.hasOwn(o, 'json')) json = (o as { json: unknown }).json;
  }
  return json;
}

/**
 * Whether this response of a raw route gets the stored text: its res.json is still Express's own (middleware that
 * wraps res.json, an envelope or a body logger, does so per request); the Fastify reply has no serializer of its own
 * and belongs to the Fastify route the choice was made for. A few property reads per answer.
 */
export function rawFor(route: RouteOutput, response: HttpResponseLike): boolean {
  if (!route.raw || response.json !== route.json) return false;
  const key = route.replySerializer;
  if (key === undefined) return true;
  const reply = response as { request?: Record<symbol, unknown> } & Record<symbol, unknown>;
  return reply[key] == null && reply.request?.[route.contextKey as symbol] === route.context;
}

/**
 * The Fastify response schema whose text is stored for this response: the route's, where the route is raw and the
 * reply belongs to the Fastify route the choice was made for (a reply serializer of the reply's own does not matter:
 * the text stored is the schema's, and such a reply parses it). Undefined: JSON.stringify is stored.
 */
export function schemaFor(route: RouteOutput, response: HttpResponseLike): RouteOutput['schema'] {
  const schema = route.schema;
  if (schema === undefined) return undefined;
  const reply = response as { request?: Record<symbol, unknown> };
  return reply.request?.[route.contextKey as symbol] === route.context ? schema : undefined;
}

const logger = new Logger('RedisToolkit:Cache');

/**
 * Whether a body may be stored on a route with an interceptor outside the cache: not when it holds a class instance
 * (anywhere in it; a Date apart), which that interceptor may treat by its class — ClassSerializerInterceptor drops the
 * fields the class excludes — while a hit could only hand it the plain object parsed back. Then the handler's own value
 * goes outward, unstored (X-Cache: MISS), and a warning names the remedy, once per route. Called after JSON.stringify
 * took the body (so it holds no cycle), on a miss only.
 */
export function classStored(route: { name: string; warned: Set<string> }, body: object): boolean {
  const found = classIn(body);
  if (found === undefined) return true;
  if (!route.warned.has('class')) {
    route.warned.add('class');
    logger.warn(
      `HttpCacheInterceptor: GET ${route.name} returned ${found} with an interceptor running outside the ` +
        'cache (global, or listed before it), e.g. ClassSerializerInterceptor: it was sent without being stored ' +
        '(X-Cache: MISS), since a hit could only hand that interceptor a plain object, without its class. Make ' +
        'HttpCacheInterceptor run before that interceptor, so that the value it stores is the one that interceptor ' +
        'made: first in @UseInterceptors(HttpCacheInterceptor, ClassSerializerInterceptor), or as an APP_INTERCEPTOR ' +
        'where the serializer is given to app.useGlobalInterceptors (those run after the APP_INTERCEPTOR providers). ' +
        'Or return plain objects. (Logged once per route.)',
    );
  }
  return false;
}

/**
 * The first class instance in a value as JSON.stringify walks it (arrays and plain objects opened, a Date left as it
 * is), for the warning; undefined when there is none. A plain object with a toJSON of its own counts as one.
 */
function classIn(value: object): string | undefined {
  if (Array.isArray(value)) {
    for (const item of value) {
      const found = typeof item === 'object' && item !== null ? classIn(item) : undefined;
      if (found !== undefined) return found;
    }
    return undefined;
  }
  const proto = Object.getPrototypeOf(value) as { constructor?: { name?: string } } | null;
  if (proto !== Object.prototype && proto !== null) {
    if (value instanceof Date) return undefined;
    return `an instance of ${proto.constructor?.name || 'a class'}`;
  }
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return 'an object with a toJSON of its own';
  for (const key of Object.keys(value)) {
    const item = (value as Record<string, unknown>)[key];
    const found = typeof item === 'object' && item !== null ? classIn(item) : undefined;
    if (found !== undefined) return found;
  }
  return undefined;
}
