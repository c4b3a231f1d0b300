import {
  Controller,
  Get,
  Headers,
  Injectable,
  UnauthorizedException,
  UseGuards,
  type ExecutionContext,
} from '@nestjs/common';
import { RateLimitGuard, RateLimitService, Throttle, type RateLimitPolicy } from '../../lib/index.js';

const API_POLICY = { name: 'api', limit: 100, ttl: 60_000 } as const;
const EXPORT_POLICY: RateLimitPolicy = { limit: 3, ttl: 10 * 60_000, algorithm: 'token-bucket' };

/** The sample's user: an `x-user-id` header (a real app would read it from its session or token). */
function userId(context: ExecutionContext): string {
  const id = context.switchToHttp().getRequest<{ headers: Record<string, string | undefined> }>().headers['x-user-id'];
  if (!id) throw new UnauthorizedException('send an x-user-id header');
  return id;
}

/**
 * The guard counts per client and per route by default. Here the `api` policy is one counter for all of /api/*
 * (per client), which is done by overriding a protected hook; other policies keep the per-route counter.
 */
@Injectable()
export class ApiRateLimitGuard extends RateLimitGuard {
  protected override generateKey(context: ExecutionContext, tracker: string, name: string): string {
    return name === 'api' ? 'api/*' : super.generateKey(context, tracker, name);
  }
}

/** Every /api route: 100 requests per minute per client IP (sliding window); the export also 3 per 10 minutes per user. */
@Controller('api')
@UseGuards(ApiRateLimitGuard)
@Throttle(API_POLICY)
export class ApiController {
  constructor(private readonly rateLimit: RateLimitService) {}

  @Get('status')
  status(): { ok: true; time: string } {
    return { ok: true, time: new Date().toISOString() };
  }

  /** Both limits hold, checked and charged together: a refused export does not use up the per-minute quota. */
  @Get('export')
  @Throttle(API_POLICY, { name: 'export', ...EXPORT_POLICY, key: userId })
  export(@Headers('x-user-id') user: string): { user: string; rows: { id: number; total: number }[] } {
    return { user, rows: Array.from({ length: 5 }, (_, i) => ({ id: i + 1, total: (i + 1) * 10 })) };
  }

  /** What the export limit looks like for a user right now, without using any of it. */
  @Get('export/quota')
  async exportQuota(
    @Headers('x-user-id') user?: string,
  ): Promise<{ remaining: number; limit: number; retryAfterMs: number }> {
    if (!user) throw new UnauthorizedException('send an x-user-id header');
    // RateLimitGuard's counter for this policy: key = the user, scope = `<Controller>.<handler>:<policy name>`
    const decision = await this.rateLimit.peekAll([
      { key: user, scope: 'ApiController.export:export', policy: EXPORT_POLICY },
    ]);
    const r = decision.results[0];
    return { remaining: r.remaining, limit: r.limit, retryAfterMs: r.retryAfterMs };
  }
}
