// The app each package fixture compiles against the installed tarball: one route per feature.
import {
  Controller,
  Get,
  HttpCode,
  type MiddlewareConsumer,
  Module,
  type NestModule,
  type OnModuleInit,
  Post,
  Req,
  Res,
  UseGuards,
} from '@nestjs/common';
import {
  CacheService,
  type CookieResponse,
  CurrentSession,
  LockService,
  PubSubService,
  RateLimitGuard,
  RedisToolkitModule,
  type Session,
  SessionGuard,
  SessionMiddleware,
  type SessionRequest,
  SessionService,
  Throttle,
} from 'nestjs-redis-toolkit';
import { RedisToolkitDashboardModule } from 'nestjs-redis-toolkit/dashboard';

@Controller()
class FeaturesController implements OnModuleInit {
  private loads = 0;
  private readonly received: unknown[] = [];

  constructor(
    private readonly cache: CacheService,
    private readonly sessions: SessionService,
    private readonly locks: LockService,
    private readonly pubsub: PubSubService,
  ) {}

  async onModuleInit(): Promise<void> {
    await this.pubsub.subscribe('news', (payload) => {
      this.received.push(payload);
    });
  }

  @Get('cache')
  async cached() {
    const value = await this.cache.getOrSet('answer', async () => ++this.loads * 42, { ttl: 60_000 });
    return { value, loads: this.loads };
  }

  @Get('limited')
  @UseGuards(RateLimitGuard)
  @Throttle({ limit: 2, ttl: 60_000 })
  limited() {
    return { ok: true };
  }

  @Post('login')
  @HttpCode(200)
  async login(@Req() req: SessionRequest, @Res({ passthrough: true }) res: CookieResponse) {
    const session = await this.sessions.create('alice', { plan: 'pro' });
    this.sessions.writeCookie(res, session, req);
    return { userId: session.userId };
  }

  @Get('me')
  @UseGuards(SessionGuard)
  me(@CurrentSession() session: Session) {
    return { userId: session.userId, data: session.data };
  }

  @Post('lock')
  @HttpCode(200)
  lock() {
    return this.locks.using('report', { ttl: 5_000 }, async (_signal, lock) => ({ fencingToken: lock.fencingToken }));
  }

  @Post('publish')
  @HttpCode(200)
  async publish() {
    await this.pubsub.publish('news', { hello: 'world' });
    for (let i = 0; i < 100 && this.received.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    return { received: this.received };
  }
}

@Module({
  imports: [
    RedisToolkitModule.forRootAsync({
      useFactory: () => ({
        connection: { url: process.env.REDIS_URL ?? 'redis://127.0.0.1:1' },
        // permission-main.ts: the refused network refuses a lazy start too
        lazyConnect: process.env.REDIS_LAZY === '1',
        keyPrefix: 'fixture:',
        session: { cookie: { secret: 'fixture-secret', secure: false } },
      }),
    }),
    // The dashboard's page and script are served from the installed package (copied into dist/ by the build).
    RedisToolkitDashboardModule.register({ path: '/_toolkit', unsafeNoAuth: true, intervalMs: 250 }),
  ],
  controllers: [FeaturesController],
})
export class AppModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(SessionMiddleware).forRoutes(FeaturesController);
  }
}
