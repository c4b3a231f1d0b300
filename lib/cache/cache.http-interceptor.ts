import {
  type CallHandler,
  type ExecutionContext,
  Injectable,
  type NestInterceptor,
  SetMetadata,
  StreamableFile,
} from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { from, lastValueFrom, type Observable } from 'rxjs';
import { InvalidOptionsError } from '../common/errors.js';
import { HTTP_CACHE_IF_METADATA, HTTP_CACHE_KEY_METADATA, HTTP_CACHE_TTL_METADATA } from './cache.constants.js';
import { CacheService } from './cache.service.js';
import type { CacheGetOrSetOptions, CacheStatus } from './cache.types.js';

/** A key computed from the request (Express or Fastify request object) and the execution context. */
export type HttpCacheKeyFn = (request: never, context: ExecutionContext) => string;

/**
 * The cache key of a route answered through HttpCacheInterceptor: a fixed string, or a function of the request (for
 * per-user caching, e.g. `@CacheKey((req: Request) => \`me:${req.user.id}\`)`). Without it the key is the URL only
 * (path and query), the same for every user.
 */
export function CacheKey(key: string | HttpCacheKeyFn): MethodDecorator & ClassDecorator {
  if (typeof key !== 'string' && typeof key !== 'function') {
    throw new InvalidOptionsError('@CacheKey: key must be a string or a function of the request');
  }
  return SetMetadata(HTTP_CACHE_KEY_METADATA, key);
}

/**
 * The ttl of a response computed when it is loaded: from the execution context (as @nestjs/cache-manager's factory)
 * and the response body. Synchronous: it must return a positive number of ms.
 */
export type HttpCacheTtlFn = (context: ExecutionContext, body: never) => number;

/** Whether a response body is stored (false: sent, uncached, `X-Cache: MISS`). */
export type HttpCacheIfFn = (body: never, context: ExecutionContext) => boolean;

/**
 * ms a response of this route (or of every route of the controller) stays fresh, or a function of the execution
 * context and the response body returning it. Default: `cache.defaultTtl`.
 */
export function CacheTTL(ttl: number | HttpCacheTtlFn): MethodDecorator & ClassDecorator {
  if (typeof ttl !== 'function' && (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl <= 0)) {
    throw new InvalidOptionsError(`@CacheTTL: ttl must be a positive number of ms or a function, got ${String(ttl)}`);
  }
  return SetMetadata(HTTP_CACHE_TTL_METADATA, ttl);
}

/**
 * Stores a 2xx response of this route (or controller) only when `predicate(body, context)` is true, e.g.
 * `@CacheIf((body: Page) => body.items.length > 0)`. Without it every cacheable response is stored.
 */
export function CacheIf(predicate: HttpCacheIfFn): MethodDecorator & ClassDecorator {
  if (typeof predicate !== 'function') throw new InvalidOptionsError('@CacheIf: predicate must be a function');
  return SetMetadata(HTTP_CACHE_IF_METADATA, predicate);
}

interface HttpRequestLike {
  method?: string;
  url?: string;
  originalUrl?: string;
}
interface HttpResponseLike {
  statusCode?: number;
  headersSent?: boolean;
  sent?: boolean;
  header?: (name: string, value: string) => unknown;
  setHeader?: (name: string, value: string) => unknown;
}

const HEADER: Record<CacheStatus, string> = { hit: 'HIT', miss: 'MISS', stale: 'STALE', grace: 'STALE' };
type LooseTtl = (context: ExecutionContext, body: unknown) => number;
type LooseIf = (body: unknown, context: ExecutionContext) => boolean;

/**
 * Caches GET responses by URL (path + query) through CacheService.getOrSet: single-flight, stale-while-revalidate,
 * the cross-process load lock, and an `X-Cache: HIT | MISS | STALE` header. Use it per controller or route with
 * `@UseInterceptors(HttpCacheInterceptor)`, or everywhere with `{ provide: APP_INTERCEPTOR, useClass:
 * HttpCacheInterceptor }`. Only 2xx answers that are plain values are stored: errors, other statuses, streams
 * (`StreamableFile`, Node streams) and responses written directly through `@Res()` are passed through uncached.
 */
@Injectable()
export class HttpCacheInterceptor implements NestInterceptor {
  constructor(
    private readonly cache: CacheService,
    private readonly reflector: Reflector,
  ) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    const http = context.switchToHttp();
    const request = http.getRequest<HttpRequestLike>();
    const response = http.getResponse<HttpResponseLike>();
    if (request.method !== 'GET') return next.handle();
    const targets = [context.getHandler(), context.getClass()];
    const keyOption = this.reflector.getAllAndOverride<string | HttpCacheKeyFn | undefined>(
      HTTP_CACHE_KEY_METADATA,
      targets,
    );
    const ttl = this.reflector.getAllAndOverride<number | LooseTtl | undefined>(HTTP_CACHE_TTL_METADATA, targets);
    const cacheIf = this.reflector.getAllAndOverride<LooseIf | undefined>(HTTP_CACHE_IF_METADATA, targets);
    const key =
      typeof keyOption === 'function'
        ? keyOption(request as never, context)
        : (keyOption ?? `http:${request.originalUrl ?? request.url ?? ''}`);
    return from(this.serve(key, ttl, cacheIf, context, response, next));
  }

  private async serve(
    key: string,
    ttl: number | LooseTtl | undefined,
    cacheIf: LooseIf | undefined,
    context: ExecutionContext,
    response: HttpResponseLike,
    next: CallHandler,
  ): Promise<unknown> {
    // Set by the loader when the response must not be stored (returned to its callers, never cached).
    let uncacheable = false;
    const loader = async (): Promise<unknown> => {
      const value = await lastValueFrom(next.handle(), { defaultValue: undefined });
      const status = response.statusCode ?? 200;
      const written = response.headersSent === true || response.sent === true;
      if (status < 200 || status >= 300 || written || isStream(value)) uncacheable = true;
      return value;
    };
    const options: CacheGetOrSetOptions<unknown> = {
      shouldCache: (body) => !uncacheable && (cacheIf === undefined || cacheIf(body, context)),
    };
    if (ttl !== undefined) options.ttl = typeof ttl === 'function' ? (body) => ttl(context, body) : ttl;
    const result = await this.cache.getOrSetWithStatus(key, loader, options);
    setHeader(response, HEADER[result.status]);
    return result.value;
  }
}

function isStream(value: unknown): boolean {
  if (value instanceof StreamableFile) return true;
  return typeof value === 'object' && value !== null && typeof (value as { pipe?: unknown }).pipe === 'function';
}

function setHeader(response: HttpResponseLike, value: string): void {
  if (response.headersSent === true || response.sent === true) return;
  if (typeof response.header === 'function') response.header('X-Cache', value);
  else response.setHeader?.('X-Cache', value);
}
