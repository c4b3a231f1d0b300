import { BadRequestException, Body, Controller, Get, HttpCode, Post, Req, Res, UseGuards } from '@nestjs/common';
import {
  CurrentSession,
  RateLimitGuard,
  SessionGuard,
  SessionService,
  Throttle,
  type Session,
  type CookieResponse,
  type SessionRequest,
} from '../../lib/index.js';

const LOGIN_LIMIT_PER_MINUTE = Number(process.env.LOGIN_LIMIT_PER_MINUTE ?? 5);

/**
 * Demo login: any non-empty username is accepted (no passwords here: plug your own check in before `create`).
 * The session id only ever travels in the signed, httpOnly cookie; it is never put in a response body.
 */
@Controller()
export class AuthController {
  constructor(private readonly sessions: SessionService) {}

  /**
   * 5 failed attempts per minute per client IP (LOGIN_LIMIT_PER_MINUTE): a successful login is refunded
   * (skipSuccessfulRequests), so only failures count; while Redis is down, refused rather than left unlimited, since
   * this is the endpoint brute force goes for.
   */
  @Post('auth/login')
  @HttpCode(200)
  @UseGuards(RateLimitGuard)
  @Throttle({ limit: LOGIN_LIMIT_PER_MINUTE, ttl: 60_000, failOpen: false, skipSuccessfulRequests: true })
  async login(
    @Body() body: { username?: unknown } | undefined,
    @CurrentSession() current: Session | null,
    @Req() req: SessionRequest,
    @Res({ passthrough: true }) res: CookieResponse,
  ) {
    const username = typeof body?.username === 'string' ? body.username.trim() : '';
    if (username.length === 0 || username.length > 100) {
      throw new BadRequestException('username must be a non-empty string of at most 100 characters');
    }
    // A new id at every login (session fixation): the session the browser came with, if any, is dropped.
    if (current) await this.sessions.destroy(current.id);
    const session = await this.sessions.create(username, { loginAt: new Date() });
    this.sessions.writeCookie(res, session, req);
    return { userId: session.userId, expiresAt: session.expiresAt };
  }

  @Get('me')
  @UseGuards(SessionGuard)
  me(@CurrentSession() session: Session) {
    const { userId, data, createdAt, lastAccessedAt, expiresAt } = session;
    return { userId, data, createdAt, lastAccessedAt, expiresAt };
  }

  @Post('auth/logout')
  @HttpCode(200)
  async logout(
    @CurrentSession() session: Session | null,
    @Req() req: SessionRequest,
    @Res({ passthrough: true }) res: CookieResponse,
  ) {
    const destroyed = session ? await this.sessions.destroy(session.id) : false;
    this.sessions.clearCookie(res, req);
    return { loggedOut: destroyed };
  }

  @Post('auth/logout-everywhere')
  @HttpCode(200)
  @UseGuards(SessionGuard)
  async logoutEverywhere(
    @CurrentSession('userId') userId: string,
    @Req() req: SessionRequest,
    @Res({ passthrough: true }) res: CookieResponse,
  ) {
    const destroyed = await this.sessions.destroyAllForUser(userId);
    this.sessions.clearCookie(res, req);
    return { destroyed };
  }
}
