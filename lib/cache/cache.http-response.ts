/**
 * The response side of HttpCacheInterceptor on Express and Fastify: its headers, Express's ETag, Fastify's reply
 * serializer, hooks and response schema.
 */

export interface HttpResponseLike {
  statusCode?: number;
  headersSent?: boolean;
  sent?: boolean;
  header?: (name: string, value: string) => unknown;
  setHeader?: (name: string, value: string) => unknown;
  getHeader?: (name: string) => unknown;
  app?: { get?: (setting: string) => unknown };
  /** Express's res.json (its own, or a wrapper middleware put on this response); undefined on Fastify. */
  json?: unknown;
}
/** Express's compiled `etag fn` setting: the ETag of a body it sends. */
export type EtagFn = (body: string, encoding: 'utf8') => string | undefined;

const JSON_TYPE = 'application/json; charset=utf-8';

/**
 * Express's ETag function when the app uses one of its built-in ones (`etag` setting true, 'weak' or 'strong': a
 * hash of the body alone, so it can be stored with it); undefined for Fastify, ETags off, or a function of the app's
 * own (computed by Express per response, as without the cache).
 */
export function etagOf(response: HttpResponseLike): { fn: EtagFn; weak: boolean } | undefined {
  const app = response.app;
  if (typeof app?.get !== 'function') return undefined;
  const setting = app.get('etag');
  const fn = app.get('etag fn');
  if (typeof fn !== 'function' || (setting !== true && setting !== 'weak' && setting !== 'strong')) return undefined;
  return { fn: fn as EtagFn, weak: setting !== 'strong' };
}

/** What of a Fastify route's own serialisation the cache must know (its context, read once per route). */
export interface FastifyOutput {
  /** A reply serializer (setReplySerializer) or a preSerialization hook (the app's or the route's): no raw JSON. */
  handsValue: boolean;
  /**
   * The route's response schema's serialisers by status (`200`, `2xx`, `default`), each a function of the body; 'mixed'
   * where a status has one per content type (no raw JSON then, the platform picks one per reply).
   */
  schema: Record<string, (body: unknown) => string> | 'mixed' | undefined;
  /** The key under which a reply holds a serializer of its own (`reply.serializer(fn)`, null when it has none). */
  replySerializer: symbol | undefined;
  /** The route's context, and the key its request holds it under (a handler may answer several Fastify routes). */
  context: object;
  contextKey: symbol;
}

/** A Fastify reply's route: its serializer, hooks and response schema; undefined for Express. */
export function fastifyOutput(response: object): FastifyOutput | undefined {
  const contextKey = symbolOf(response, 'fastify.context');
  const context = contextKey && ((response as Record<symbol, unknown>)[contextKey] as Record<string | symbol, unknown>);
  if (contextKey === undefined || typeof context !== 'object' || context === null) return undefined;
  const hooks = context.preSerialization;
  const handsValue =
    !!symbolProperty(context, 'fastify.replySerializerDefault') || (Array.isArray(hooks) && hooks.length > 0);
  const def = symbolProperty(context, 'response-schema');
  let schema: FastifyOutput['schema'];
  if (typeof def === 'object' && def !== null) {
    const all = Object.values(def).every((fn) => typeof fn === 'function');
    schema = all ? (def as Record<string, (body: unknown) => string>) : 'mixed';
  }
  const replySerializer = Object.getOwnPropertySymbols(response).find(
    (s) => s.description === 'fastify.reply.serializer',
  );
  return { handsValue, schema, replySerializer, context, contextKey };
}

/**
 * The text Fastify sends for a body under a response schema of functions (no content types), as its serialize picks
 * one: by the status, then `2xx`, then `default`; plain JSON where none applies.
 */
export function schemaText(schema: Record<string, (body: unknown) => string>, status: number, body: unknown): string {
  const fn = schema[status] ?? schema[`${String(status)[0]}xx`] ?? schema.default;
  return fn === undefined ? JSON.stringify(body) : fn(body);
}

/** A property under a symbol of Fastify's, own or inherited (a reply's route context is a getter of its prototype). */
function symbolProperty(target: object, description: string): unknown {
  const symbol = symbolOf(target, description);
  return symbol === undefined ? undefined : (target as Record<symbol, unknown>)[symbol];
}

function symbolOf(target: object, description: string): symbol | undefined {
  for (let o: object | null = target; o !== null; o = Object.getPrototypeOf(o) as object | null) {
    const symbol = Object.getOwnPropertySymbols(o).find((s) => s.description === description);
    if (symbol !== undefined) return symbol;
  }
  return undefined;
}

/**
 * The JSON type of a stored JSON text sent as it is, unless the route set its own (`@Header('Content-Type', ...)`, the
 * handler): Express's res.json and Fastify's reply.send keep a type already set, and so does the cache.
 */
export function setJsonType(response: HttpResponseLike): void {
  if (response.getHeader?.('Content-Type') === undefined) setHeader(response, 'Content-Type', JSON_TYPE);
}

export function setHeader(response: HttpResponseLike, name: string, value: string): void {
  if (response.headersSent === true || response.sent === true) return;
  // Express: Node's own setHeader (res.header() would re-check the name); Fastify: reply.header()
  if (typeof response.setHeader === 'function') response.setHeader(name, value);
  else response.header?.(name, value);
}
