import { type CallHandler, type ExecutionContext, Injectable, type NestInterceptor, Optional } from '@nestjs/common';
import { ApplicationConfig, Reflector } from '@nestjs/core';
import { from, lastValueFrom, type Observable } from 'rxjs';
import { KeyBuilder, MAX_KEY_BYTES } from '../common/keys.js';
import { turnEnd } from '../common/turn-memo.js';
import { HTTP_CACHE_IF_METADATA, HTTP_CACHE_KEY_METADATA, HTTP_CACHE_TTL_METADATA } from './cache.constants.js';
import type { HttpCacheKeyFn } from './cache.http-decorators.js';
import {
  type CredentialRequest,
  type RouteSharing,
  bypasses,
  carriesNonce,
  declaredHeader,
  ownResponse,
  routeSharing,
} from './cache.http-sharing.js';
import { type RouteVary, hitVary, requestVary, routeVary, variantKey, variesBeyond } from './cache.http-vary.js';
import { isSse, NonHttpHandlers, taggedKey, versionTag } from './cache.http-contexts.js';
import { type HttpCacheKeyOptions, isKeyOptions, keptQuery } from './cache.http-query.js';
import { CacheService, type PreparedCall } from './cache.service.js';
import type { CacheResult, CacheStatus } from './cache.types.js';
import {
  type EtagFn,
  etagOf,
  type HttpResponseLike,
  schemaText,
  setHeader,
  setJsonType,
} from './cache.http-response.js';
import { classStored, type RouteOutput, rawFor, routeOutput, schemaFor } from './cache.http-raw.js';

interface HttpRequestLike extends CredentialRequest {
  method?: string;
  url?: string;
  originalUrl?: string;
}
const HEADER: Record<CacheStatus, string> = { hit: 'HIT', miss: 'MISS', stale: 'STALE', grace: 'STALE' };
type LooseTtl = (context: ExecutionContext, body: unknown) => number;
type LooseIf = (body: unknown, context: ExecutionContext) => boolean;

/**
 * What is stored for a response: its body as sent, behind one tag character — `j` an object or array as JSON text
 * (sent as is, with the JSON content type), `f` the same made by the route's Fastify response schema (see schemaFor),
 * `e` the same with the ETag Express gives that text before it (`e<etag>\n<JSON>`: a hit sets it, so Express does not
 * hash the body again), `v` another value as JSON (a number, boolean or null: parsed back and handed to Nest), `s` a
 * string body (handed to Nest as it is).
 */
type StoredBody = string;
/** A response not stored, handed to the requests that joined its load (route's non-2xx, @CacheIf said no, …). */
class Uncached {
  constructor(readonly body: unknown) {}
}
/** A response of the one request it answers (see ownResponse): not handed to the requests that joined its load. */
class Own extends Uncached {
  constructor(
    body: unknown,
    readonly response: HttpResponseLike,
  ) {
    super(body);
  }
}
type Loaded = StoredBody | Uncached;
const stored = (value: Loaded): boolean => typeof value === 'string';

/** A route's caching, read from its decorators on its first request (its output: see cache.http-raw.ts). */
interface Route extends RouteSharing, RouteOutput {
  key: string | HttpCacheKeyFn | undefined;
  ttl: LooseTtl | undefined;
  cacheIf: LooseIf | undefined;
  /** The getOrSet options, checked once (a ttl function of the context and body: completed per request). */
  call: PreparedCall<Loaded>;
  /** Express's built-in ETag of the JSON text sent (raw routes only), stored with it: see etagOf(). */
  etag: { fn: EtagFn; weak: boolean } | undefined;
  /** The request headers its responses vary by (cache.http-vary.ts). */
  vary: RouteVary;
  /** An @Sse route: passed through (see isSse). */
  sse: boolean;
  /** After the URL in the default key: the route's version where the URL does not say it (see versionTag). */
  version: string | undefined;
  /** `@CacheKey({ query })`: the query parameters the default key keeps (cache.http-query.ts); undefined: all. */
  query: readonly string[] | undefined;
  /** The default key of each URL seen lately, for a route whose key is not its URL alone (a version, a query list). */
  urlKeys: Map<string, string> | undefined;
}

/**
 * Caches GET responses by URL (path + query) through CacheService.getOrSet: single-flight, stale-while-revalidate,
 * the cross-process load lock, and an `X-Cache: HIT | MISS | STALE` header. Use it per controller or route with
 * `@UseInterceptors(HttpCacheInterceptor)`, or everywhere with `{ provide: APP_INTERCEPTOR, useClass:
 * HttpCacheInterceptor }`. Only 2xx answers that are plain values are stored: errors, other statuses, streams
 * (`StreamableFile`, Node streams, async iterables) and `@Sse` routes are passed through uncached; a route that answers
 * through `@Res()` is not cached (BYPASS); a handler that is not HTTP is passed through (see NonHttpHandlers). A
 * stream, or a status the handler set itself, is not handed to a request that joined its load either: that request
 * runs its own handler (see ownResponse).
 *
 * A shared cache (RFC 9111 §3.5; cache.http-sharing.ts): a request with credentials is neither answered from nor stored
 * under a key every user shares (the URL, a @CacheKey string) unless the route is @CacheShared: it goes to the handler
 * (`X-Cache: BYPASS`, a warning once per route). A response marked `Cache-Control: no-store` or `private` (under a
 * shared key), or with a `Set-Cookie`, is sent (MISS) and never stored, nor handed to a request that joined its load.
 * A response with `Vary` is stored per value of the request headers it names (cache.http-vary.ts).
 *
 * A response is stored as the JSON text it is sent as. Where this interceptor is the route's first (outermost) one and
 * nothing of the platform's would see the value (cache.http-raw.ts), an object or array body is sent as that text with
 * the JSON content type, hit or miss; else it is parsed back into a value for what comes after. Behind another
 * interceptor, a body holding a class instance is not stored (see classStored).
 */
@Injectable()
export class HttpCacheInterceptor implements NestInterceptor {
  /** Per controller class, per handler (a handler may be inherited by several controllers). */
  private readonly routes = new WeakMap<object, WeakMap<object, Route>>();
  /** The key of each URL seen lately: see urlKey. */
  private readonly urlKeys = new Map<string, string>();
  private readonly nonHttp: NonHttpHandlers;

  constructor(
    private readonly cache: CacheService,
    private readonly reflector: Reflector,
    @Optional() private readonly config?: ApplicationConfig,
  ) {
    this.nonHttp = new NonHttpHandlers(reflector);
  }

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') {
      this.nonHttp.check(context);
      return next.handle();
    }
    // what switchToHttp().getRequest() / getResponse() return, without the three closures it makes per request
    const request = context.getArgByIndex<HttpRequestLike>(0);
    if (request.method !== 'GET') return next.handle();
    const response = context.getArgByIndex<HttpResponseLike>(1);
    const route = this.routeOf(context, response);
    if (route.sse) return next.handle();
    if (bypasses(route, request)) {
      setHeader(response, 'X-Cache', 'BYPASS');
      return next.handle();
    }
    // Vary: * (by anything) is never stored; other names key each variant apart
    const vary = requestVary(route.vary, response);
    if (vary === '*') {
      setHeader(response, 'X-Cache', 'BYPASS');
      return next.handle();
    }
    let key =
      typeof route.key === 'function'
        ? route.key(request as never, context)
        : (route.key ?? this.urlKey(request.originalUrl ?? request.url ?? '', route));
    if (vary.length > 0) key = variantKey(key, vary, request.headers as Record<string, unknown> | undefined);
    let body: unknown;
    // This request was answered from the cache (stale, grace, or a hit refreshed early): a load that runs for it now is
    // the background refresh, and its response is already sent by the cache, not by the handler (see ownResponse).
    let answered = false;
    const loader = async (): Promise<Loaded> => {
      const status = response.statusCode; // before the handler: see ownResponse
      body = await lastValueFrom(next.handle(), { defaultValue: undefined });
      // varying by a header this key left out: not for this variant's other requests (see variesBeyond)
      if (variesBeyond(route.vary, vary, response, route.name)) return new Own(body, response);
      return this.toStored(route, context, response, body, status, answered);
    };
    const ttl = route.ttl;
    // A ttl function of the context and of the body as the handler returned it (before it is stored).
    const call =
      ttl === undefined
        ? route.call
        : this.cache.prepare<Loaded>({ ttl: () => ttl(context, body), shouldCache: stored });
    const result = this.cache.getOrSetPrepared(key, loader, call);
    // An L1 hit is answered in the turn's check phase (turnEnd), not within the socket read that brought it: the hits
    // of a busy turn go out together after the turn's reads, as Redis hits do (in the callback of the reply serving
    // the turn). Answered at once, each write came between two reads. bench/url-cache.bench.ts, 8 rounds of 1 s,
    // in-process tier ÷ cache-manager's: Express 1.16× at once, 1.36× here; Fastify 1.09×, 1.79× (app CPU per hit 62
    // µs, 39). Idle, the check phase follows the poll phase of the same turn.
    if (!(result instanceof Promise)) {
      answered = true;
      return from(turnEnd().then(() => this.answer(route, response, result)));
    }
    return from(
      result.then(
        (r) => {
          // another request's response, that request's alone (it was the one that loaded): this one runs its own
          // handler
          if (r.value instanceof Own && r.value.response !== response) return this.ownAnswer(response, next);
          answered = true;
          return this.answer(route, response, r);
        },
        (err: unknown) => {
          // a handler that threw (or a load that failed): answered by Nest's exception filter, and never stored
          setHeader(response, 'X-Cache', 'MISS');
          throw err;
        },
      ),
    );
  }

  private ownAnswer(response: HttpResponseLike, next: CallHandler): Promise<unknown> {
    setHeader(response, 'X-Cache', 'MISS');
    return lastValueFrom(next.handle(), { defaultValue: undefined });
  }

  /** The body handed to Nest for a getOrSet result, with the X-Cache header (and those of the stored text). */
  private answer(route: Route, response: HttpResponseLike, result: CacheResult<Loaded>): unknown {
    setHeader(response, 'X-Cache', HEADER[result.status]);
    const value = result.value;
    if (value instanceof Uncached) return value.body;
    // a Vary the handler sets itself, on a response it did not make (a hit), as on the ones it makes
    const vary = hitVary(route.vary, response);
    if (vary !== undefined) setHeader(response, 'Vary', vary);
    if (rawFor(route, response)) {
      const tag = value.charCodeAt(0);
      // a route with a Fastify response schema sends only the schema's text (`f`) as it is: an entry another instance
      // or version stored (`j`, `e`) is parsed and goes through the schema
      if (tag === 102 /* f */ || (tag === 106 /* j */ && route.schema === undefined)) {
        setJsonType(response);
        return value.slice(1);
      }
      if (tag === 101 /* e */ && route.schema === undefined) {
        const end = value.indexOf('\n');
        setJsonType(response);
        // only an ETag of the kind this app sends (another instance may be set up otherwise): else Express hashes
        if (route.etag !== undefined && route.etag.weak === value.startsWith('W/', 1)) {
          setHeader(response, 'ETag', value.slice(1, end));
        }
        return value.slice(end + 1);
      }
    }
    return parse(value);
  }

  /** The handler's body as stored, or Uncached when it must not be stored (`before`: the status before the handler). */
  private toStored(
    route: Route,
    ctx: ExecutionContext,
    res: HttpResponseLike,
    body: unknown,
    before?: number,
    answered = false,
  ): Loaded {
    // first: a response of any status that is its own request's alone is never handed to another
    if (ownResponse(route, res, body, before, answered)) return new Own(body, res);
    const status = res.statusCode ?? 200;
    if (status < 200 || status >= 300 || body === undefined) return new Uncached(body);
    if (route.cacheIf !== undefined && !route.cacheIf(body, ctx)) return new Uncached(body);
    // a body holding its response's CSP nonce is that response's alone (see carriesNonce)
    if (typeof body === 'string') return carriesNonce(route, res, body) ? new Own(body, res) : `s${body}`;
    // bytes: Fastify sends them as they are, and stored as JSON they came back as {"type":"Buffer","data":[...]}
    if (ArrayBuffer.isView(body) || body instanceof ArrayBuffer) return new Uncached(body);
    const json = JSON.stringify(body);
    // undefined for a function or symbol: sent as Nest sends it, never stored
    if (json === undefined) return new Uncached(body);
    if (typeof body !== 'object' || body === null) return `v${json}`;
    // an interceptor outside may treat a class instance by its class (ClassSerializerInterceptor): see classStored
    if (route.outer && !classStored(route, body)) return new Uncached(body);
    if (carriesNonce(route, res, json)) return new Own(body, res);
    // the text a Fastify response schema makes of it, as Fastify would send it (no field the schema leaves out)
    const schema = schemaFor(route, res);
    if (schema !== undefined) return `f${schemaText(schema, status, body)}`;
    const etag = route.etag?.fn(json, 'utf8');
    return etag === undefined || etag.includes('\n') ? `j${json}` : `e${etag}\n${json}`;
  }

  /**
   * urlKey(url), the same string object for the same URL while it is in a bounded memo (URLs of up to 256 characters):
   * CacheService's memo of entry keys then finds it by identity, where a new `http:` + URL string had to be flattened
   * and hashed on every request (about 0.2 µs of a hit, measured in-process).
   */
  private urlKey(url: string, route: Route): string {
    if (url.length > MEMO_URL_LENGTH) return routeUrlKey(url, route);
    // the keys of a versioned route, or one keyed by chosen query parameters, in a memo of its own (the same URL is
    // another key on each version's route)
    const memo = route.urlKeys ?? this.urlKeys;
    let key = memo.get(url);
    if (key === undefined) {
      key = routeUrlKey(url, route);
      if (memo.size >= URL_KEY_MEMO) memo.clear();
      memo.set(url, key);
    }
    return key;
  }

  private routeOf(context: ExecutionContext, response: HttpResponseLike): Route {
    const cls = context.getClass();
    const handler = context.getHandler();
    let ofClass = this.routes.get(cls);
    if (ofClass === undefined) {
      ofClass = new WeakMap();
      this.routes.set(cls, ofClass);
    }
    let route = ofClass.get(handler);
    if (route === undefined) {
      const targets = [handler, cls];
      const ttl = this.reflector.getAllAndOverride<number | LooseTtl | undefined>(HTTP_CACHE_TTL_METADATA, targets);
      const given = this.reflector.getAllAndOverride<string | HttpCacheKeyFn | HttpCacheKeyOptions | undefined>(
        HTTP_CACHE_KEY_METADATA,
        targets,
      );
      // { query }: still the URL key (shared by every user), with chosen query parameters only
      const key = isKeyOptions(given) ? undefined : given;
      route = {
        ...routeSharing(this.reflector, context, key),
        key,
        ttl: typeof ttl === 'function' ? ttl : undefined,
        cacheIf: this.reflector.getAllAndOverride<LooseIf | undefined>(HTTP_CACHE_IF_METADATA, targets),
        call: this.cache.prepare<Loaded>({ ...(typeof ttl === 'number' && { ttl }), shouldCache: stored }),
        ...routeOutput(this, this.config, cls, handler, response),
        etag: undefined,
        vary: routeVary(declaredHeader(handler, 'vary')),
        sse: isSse(handler),
        version: versionTag(this.config?.getVersioning(), cls, handler),
        query: isKeyOptions(given) ? given.query : undefined,
        urlKeys: undefined,
      };
      if (route.version !== undefined || route.query !== undefined) route.urlKeys = new Map();
      if (route.raw) route.etag = etagOf(response);
      ofClass.set(handler, route);
    }
    return route;
  }
}

/** The URL memo of urlKey: at most this many URLs (then emptied), each of at most this many characters. */
const URL_KEY_MEMO = 10_000;
const MEMO_URL_LENGTH = 256;

/** How many characters of a hashed URL its key keeps in front of the hash (at most 3 bytes each: well within). */
const URL_HEAD = 256;

/**
 * The default key of a request: `http:` + its URL (path and query). A URL that would make the key longer than a key
 * may be (MAX_KEY_BYTES), or that holds a `#`, gives `http:` + its first 256 characters (up to any `#`) + `#` + a
 * hash of the whole URL: every URL still has a key of its own, the entry of a long URL is still found by a pattern of
 * its path, and no URL keyed as it is (none has a `#`) can name the entry of a hashed one.
 */
function urlKey(url: string): string {
  const key = `http:${url}`;
  // bytes >= UTF-16 units >= bytes / 3: Buffer.byteLength only for the keys that may be too long
  const tooLong =
    key.length > MAX_KEY_BYTES / 3 && (key.length > MAX_KEY_BYTES || Buffer.byteLength(key) > MAX_KEY_BYTES);
  if (!tooLong && !url.includes('#')) return key;
  const head = url.slice(0, URL_HEAD);
  const fragment = head.indexOf('#');
  return `http:${KeyBuilder.headAndHash(fragment >= 0 ? head.slice(0, fragment) : head, url)}`;
}

/** The default key of a request of `route`: its URL (with only the query parameters it keeps), and its version. */
function routeUrlKey(url: string, route: Route): string {
  const key = urlKey(route.query === undefined ? url : keptQuery(url, route.query));
  return route.version === undefined ? key : taggedKey(key, route.version);
}

/** A stored `v`/`j`/`f`/`e` body parsed back into its value; an `s` body is the string itself. */
function parse(value: StoredBody): unknown {
  const tag = value.charCodeAt(0);
  if (tag === 115 /* s */) return value.slice(1);
  return JSON.parse(tag === 101 /* e */ ? value.slice(value.indexOf('\n') + 1) : value.slice(1));
}
