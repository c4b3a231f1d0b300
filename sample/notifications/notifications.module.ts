import {
  BadRequestException,
  Body,
  Controller,
  HttpCode,
  Module,
  Post,
  UseGuards,
  type MiddlewareConsumer,
  type NestModule,
} from '@nestjs/common';
import {
  CurrentSession,
  PubSubService,
  type RedisToolkitOptions,
  SessionGuard,
  SessionMiddleware,
} from '../../lib/index.js';
import { NotificationsGatewayModule } from '../../lib/notifications/index.js';

/**
 * Sample of pub/sub. The page at / logs in with POST /auth/login (sample/auth: a signed, httpOnly session cookie),
 * connects to the `/notifications` Socket.IO namespace — the gateway's default `authenticate` reads that same cookie
 * through SessionService — and shows live notifications; POST /notifications/send publishes one.
 */
/** Channels any logged-in user may subscribe to (`pubsub.gateway.publicChannels` in app.module.ts). */
export const PUBLIC_CHANNELS = ['announcements'];

/**
 * The sample's `pubsub` options (app.module.ts; the browser test uses the same): durable mode keeps each user's
 * direct messages in a capped stream, so a page that reloads or reconnects replays what it missed after `lastId`.
 */
export const SAMPLE_PUBSUB: RedisToolkitOptions['pubsub'] = {
  durable: { maxLen: 100, ttl: 3_600_000 },
  gateway: { publicChannels: PUBLIC_CHANNELS },
};

@Controller('notifications')
class NotificationsController {
  constructor(private readonly pubsub: PubSubService) {}

  /** `{ to: '<user>' | 'announcements', text }`, as the logged-in user. */
  @Post('send')
  @HttpCode(202)
  @UseGuards(SessionGuard)
  async send(
    @CurrentSession('userId') from: string,
    @Body() body: { to?: unknown; text?: unknown } | undefined,
  ): Promise<{ receivers: number }> {
    const { to, text } = body ?? {};
    if (typeof text !== 'string' || text.length === 0 || text.length > 500)
      throw new BadRequestException('text: 1-500 characters');
    if (typeof to !== 'string' || to.trim().length === 0 || to.length > 100)
      throw new BadRequestException('to: a user name or "announcements"');
    const message = { from, text };
    const receivers = PUBLIC_CHANNELS.includes(to)
      ? await this.pubsub.publish(to, message)
      : await this.pubsub.notifyUser(to.trim(), message);
    return { receivers };
  }
}

@Module({
  imports: [NotificationsGatewayModule.register()],
  controllers: [NotificationsController],
})
export class NotificationsModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(SessionMiddleware).forRoutes(NotificationsController);
  }
}
