/**
 * The response side of HttpCacheInterceptor on Express and Fastify: its headers, Express's ETag, Fastify's reply
 * serializer.
 */

export interface HttpResponseLike {
  statusCode?: number;
  headersSent?: boolean;
  sent?: boolean;
  header?: (name: string, value: string) => unknown;
  setHeader?: (name: string, value: string) => unknown;
  getHeader?: (name: string) => unknown;
  app?: { get?: (setting: string) => unknown };
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

/** Whether the Fastify route of this reply has its own reply serializer (setReplySerializer): then no raw JSON. */
export function hasFastifySerializer(response: object): boolean {
  const context = symbolProperty(response, 'fastify.context');
  return typeof context === 'object' && context !== null && !!symbolProperty(context, 'fastify.replySerializerDefault');
}

function symbolProperty(target: object, description: string): unknown {
  const symbol = Object.getOwnPropertySymbols(target).find((s) => s.description === description);
  return symbol === undefined ? undefined : (target as Record<symbol, unknown>)[symbol];
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
