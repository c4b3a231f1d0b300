// The gateway fixture (bundlers.mjs): an app with `notificationsGateway: true`, its peers (socket.io,
// @nestjs/websockets, @nestjs/platform-socket.io) installed as a user installs them. POST /login gives a session token
// (what a Socket.IO client authenticates with), POST /notify publishes to that user's channel through PubSubService.
import { Controller, HttpCode, Module, Post } from '@nestjs/common';
import { PubSubService, RedisToolkitModule, SessionService } from 'nestjs-redis-toolkit';

@Controller()
class NotifyController {
  constructor(
    private readonly sessions: SessionService,
    private readonly pubsub: PubSubService,
  ) {}

  @Post('login')
  @HttpCode(200)
  async login() {
    const session = await this.sessions.create('alice', {});
    return { token: session.id };
  }

  @Post('notify')
  @HttpCode(200)
  async notify() {
    await this.pubsub.publish('user:alice', { hello: 'gateway' });
    return { published: true };
  }
}

@Module({
  imports: [
    RedisToolkitModule.forRootAsync({
      notificationsGateway: true,
      useFactory: () => ({
        connection: { url: process.env.REDIS_URL ?? 'redis://127.0.0.1:1' },
        keyPrefix: 'gateway-fixture:',
        session: { cookie: { secret: 'fixture-secret', secure: false } },
      }),
    }),
  ],
  controllers: [NotifyController],
})
export class GatewayModule {}
