import { Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { Session } from './session.types.js';

/** The few Fastify instance methods used here (no import of fastify: it is an optional peer). */
interface FastifyInstanceLike {
  hasRequestDecorator(name: string): boolean;
  decorateRequest(
    name: string,
    property: {
      getter(this: FastifyRequestLike): Session | null | undefined;
      setter(this: FastifyRequestLike, value: Session | null): void;
    },
  ): unknown;
  addHook(
    name: 'onSend',
    hook: (
      request: unknown,
      reply: FastifyReplyLike,
      payload: unknown,
      done: (err: null, payload: unknown) => void,
    ) => void,
  ): unknown;
}

interface FastifyRequestLike {
  raw: { session?: Session | null };
}

interface FastifyReplyLike {
  raw: { getHeader(name: string): unknown; removeHeader(name: string): void };
  getHeader(name: string): unknown;
  header(name: string, value: string[]): unknown;
}

/**
 * Fastify plumbing for sessions, set up when the app runs on Fastify (nothing on Express or without HTTP):
 * - `request.session` on FastifyRequest: a getter (and setter) for the Node request's `session`, where
 *   SessionMiddleware (a Nest middleware, which on Fastify sees only Node's request) and SessionGuard keep it. When
 *   another plugin (@fastify/session, @fastify/secure-session) already owns `request.session`, it is left alone and a
 *   warning says to use `@CurrentSession()`, which always reads ours.
 * - Set-Cookie written by middleware on the Node response is moved onto the reply before it is sent: Fastify writes
 *   the reply's headers with `writeHead`, which would otherwise drop the Node response's Set-Cookie whenever the
 *   reply has one of its own (e.g. from @fastify/cookie), losing a rolling session refresh without a word. A cookie
 *   the reply already sets under the same name wins (it was written later, by the handler).
 */
@Injectable()
export class SessionPlatformBinding implements OnModuleInit {
  private readonly logger = new Logger('RedisToolkit:Session');

  constructor(private readonly adapterHost: HttpAdapterHost) {}

  onModuleInit(): void {
    const adapter = this.adapterHost.httpAdapter;
    const type = adapter?.getType();
    if (type === undefined || type === 'express') return;
    if (type !== 'fastify') {
      this.logger.warn(
        `HTTP platform "${type}" is neither Express nor Fastify, the two the toolkit's HTTP features are tested on: ` +
          'check that @CurrentSession() sees the session SessionMiddleware loads (or use SessionGuard on each route)',
      );
      return;
    }
    const fastify = adapter.getInstance<FastifyInstanceLike>();
    if (fastify.hasRequestDecorator('session')) {
      this.logger.warn(
        'request.session is already decorated by another Fastify plugin (e.g. @fastify/session, whose store may be ' +
          "RedisSessionStore): it is that plugin's; the toolkit's own session (SessionMiddleware) is read with " +
          '@CurrentSession() (or request.raw.session)',
      );
    } else {
      fastify.decorateRequest('session', {
        getter(this: FastifyRequestLike) {
          return this.raw.session;
        },
        setter(this: FastifyRequestLike, value: Session | null) {
          this.raw.session = value;
        },
      });
    }
    fastify.addHook('onSend', (_request, reply, payload, done) => {
      moveNodeCookies(reply);
      done(null, payload);
    });
  }
}

function moveNodeCookies(reply: FastifyReplyLike): void {
  const pending = asList(reply.raw.getHeader('set-cookie'));
  if (pending.length === 0) return;
  reply.raw.removeHeader('set-cookie');
  // With the Node response's header gone, getHeader returns the reply's own only.
  const own = asList(reply.getHeader('set-cookie'));
  const names = new Set(own.map(cookieName));
  const kept = pending.filter((c) => !names.has(cookieName(c)));
  // header('set-cookie', …) appends to the reply's own cookies.
  if (kept.length > 0) reply.header('set-cookie', kept);
}

function asList(header: unknown): string[] {
  return header === undefined ? [] : Array.isArray(header) ? header.map(String) : [String(header)];
}

function cookieName(cookie: string): string {
  return cookie.slice(0, cookie.indexOf('='));
}
