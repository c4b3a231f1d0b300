import {
  Body,
  Controller,
  Get,
  type MiddlewareConsumer,
  Module,
  type NestModule,
  Post,
  Req,
  Res,
  type Type,
  UseGuards,
} from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import request from 'supertest';
import {
  type CookieResponse,
  CurrentSession,
  type Session,
  SessionGuard,
  SessionMiddleware,
  type SessionRequest,
  SessionService,
} from '../../lib/index.js';
import { RedisConnection, type SessionData, signCookieValue } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { createToolkitApp, type ToolkitApp, type ToolkitAppOptions } from './toolkit-app.js';

/** A key prefix of its own for a session test app. */
export const newSessionPrefix = (): string => `rtk-sess-${randomBytes(4).toString('hex')}:`;

export interface SessionHttpAppOptions extends Omit<ToolkitAppOptions, 'http' | 'imports'> {
  /** `session.cookie.secret` (one, or a rotation list). */
  secret: string | string[];
  /** Controllers put in a module that applies SessionMiddleware (none: no SessionMiddleware in the app). */
  withMiddleware?: Type<unknown>[];
  /** Where that module applies SessionMiddleware: a path (default '*', every route of the app) or controllers. */
  middlewareOn?: string | Type<unknown>[];
}

export interface SessionHttpApp {
  app: ToolkitApp;
  /** supertest on the app's HTTP server. */
  http: ReturnType<typeof request>;
  sessions: SessionService;
  client: RedisClient;
  prefix: string;
}

/**
 * An HTTP app (Express or Fastify, `platform`) with sessions on `target`: `secret` as the cookie secret over the other
 * `session` options, `withMiddleware`'s controllers behind SessionMiddleware, `controllers` beside them; its own key
 * prefix unless `keyPrefix` is given.
 */
export async function sessionHttpApp(options: SessionHttpAppOptions): Promise<SessionHttpApp> {
  const { secret, session, withMiddleware, middlewareOn = '*', keyPrefix = newSessionPrefix(), ...toolkit } = options;
  const app = await createToolkitApp({
    ...toolkit,
    http: true,
    keyPrefix,
    session: { ...session, cookie: { secret, ...session?.cookie } },
    imports: withMiddleware ? [middlewareModule(withMiddleware, middlewareOn)] : [],
  });
  return {
    app,
    http: request(app.app.getHttpServer()),
    sessions: app.get(SessionService),
    client: app.get(RedisConnection).client,
    prefix: keyPrefix,
  };
}

/** A module of `controllers` that applies SessionMiddleware on `on`. */
function middlewareModule(controllers: Type<unknown>[], on: string | Type<unknown>[]): Type<NestModule> {
  @Module({ controllers })
  class SessionMiddlewareModule implements NestModule {
    configure(consumer: MiddlewareConsumer): void {
      consumer.apply(SessionMiddleware).forRoutes(...(typeof on === 'string' ? [on] : on));
    }
  }
  return SessionMiddlewareModule;
}

export interface LoginRoute {
  /** The POST route (default 'login'). */
  path?: string;
  /** The session's user: this one, or the request body's `user` (default). */
  user?: string;
  /** The session's data. */
  data?: SessionData;
  /** docs/session.md's login: the session the request came with is destroyed first. */
  replaceCurrent?: boolean;
  /** The answer (default `{ userId }`); `destroyedPrevious`: whether `replaceCurrent` destroyed a session. */
  answer?: (session: Session, destroyedPrevious: boolean) => unknown;
}

/** A controller of one login route: creates a session (see LoginRoute), writes its cookie and answers. */
export function loginController(route: LoginRoute = {}): Type<unknown> {
  const { path = 'login', user, data, replaceCurrent = false, answer = (s: Session) => ({ userId: s.userId }) } = route;
  @Controller()
  class LoginController {
    constructor(private readonly sessions: SessionService) {}

    @Post(path)
    async login(
      @Body() body: { user: string },
      @CurrentSession() current: Session | null,
      @Req() req: SessionRequest,
      @Res({ passthrough: true }) res: CookieResponse,
    ) {
      const destroyedPrevious = replaceCurrent && current ? await this.sessions.destroy(current.id) : false;
      const session = await this.sessions.create(user ?? body.user, data);
      this.sessions.writeCookie(res, session, req);
      return answer(session, destroyedPrevious);
    }
  }
  return LoginController;
}

/** A controller of one GET route behind SessionGuard, answering `{ userId }` of the session. */
export function userIdController(path: string): Type<unknown> {
  @Controller()
  class UserIdController {
    @Get(path)
    @UseGuards(SessionGuard)
    me(@CurrentSession('userId') userId: string) {
      return { userId };
    }
  }
  return UserIdController;
}

/** The Set-Cookie lines of a response header (absent, one line or several); with `name`, that cookie's only. */
export function setCookieLines(header: unknown, name?: string): string[] {
  const lines = Array.isArray(header) ? (header as string[]) : typeof header === 'string' ? [header] : [];
  return name === undefined ? lines : lines.filter((line) => line.startsWith(`${name}=`));
}

/** The first Set-Cookie line of cookie `name` (default rtk.sid); `live`: not one that clears it. Throws when none. */
export function cookieLine(header: unknown, { name = 'rtk.sid', live = false } = {}): string {
  const lines = setCookieLines(header);
  const found = setCookieLines(header, name).find((line) => !live || !line.startsWith(`${name}=;`));
  if (!found) throw new Error(`no ${name} cookie in ${JSON.stringify(lines)}`);
  return found;
}

/** The `name=value` pair of that line, as a browser sends it back. */
export function cookiePair(header: unknown, which: { name?: string; live?: boolean } = {}): string {
  return cookieLine(header, which).split(';')[0];
}

/** The `rtk.sid` Cookie pair a browser holding session `id`, signed with `secret`, sends. */
export function signedCookie(id: string, secret: string): string {
  return `rtk.sid=${encodeURIComponent(signCookieValue(id, secret))}`;
}
