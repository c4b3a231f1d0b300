import { Module } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { RedisToolkitModule, SessionGuard } from '../lib/index.js';
import { type RateLimitAlgorithm } from '../lib/advanced.js';
import { RedisToolkitDashboardModule } from '../lib/dashboard/index.js';
import { ApiModule } from './api/api.module.js';
import { AuthModule } from './auth/auth.module.js';
import { HealthController } from './health/health.controller.js';
import { NotificationsModule, SAMPLE_PUBSUB } from './notifications/notifications.module.js';
import { ObservabilityModule } from './observability/observability.module.js';
import { PageController } from './page/page.controller.js';
import { OrdersModule } from './orders/orders.module.js';
import { ProductsModule } from './products/products.module.js';
import { sessionSecret } from './session-secret.js';

@Module({
  imports: [
    ConfigModule.forRoot({ isGlobal: true }),
    RedisToolkitModule.forRootAsync({
      inject: [ConfigService],
      useFactory: (config: ConfigService) => ({
        connection: { url: config.getOrThrow<string>('REDIS_URL') },
        keyPrefix: config.get<string>('REDIS_KEY_PREFIX', 'rtk-sample:'),
        commandTimeout: Number(config.get('REDIS_COMMAND_TIMEOUT_MS', 500)),
        maxReconnectDelay: 1_000,
        // L1: hot entries are served from memory (kept coherent across instances through Redis pub/sub).
        cache: { defaultTtl: 30_000, staleTtl: 60_000, l1: { max: 10_000, ttl: 5_000 } },
        rateLimit: {
          defaults: {
            limit: Number(config.get('RATE_LIMIT_LIMIT', 100)),
            ttl: 60_000,
            // sliding-window (exact), fixed-window or token-bucket; a wrong name stops the app at start, naming it
            algorithm: config.get<RateLimitAlgorithm>('RATE_LIMIT_ALGORITHM', 'sliding-window'),
          },
          trustProxy: config.get('TRUST_PROXY') === 'true',
          // the largest sliding-window limit accepted (RATE_LIMIT_LIMIT above it stops the app at start)
          maxSlidingWindowLimit: Number(config.get('RATE_LIMIT_MAX_SLIDING_WINDOW_LIMIT', 10_000)),
        },
        session: {
          cookie: { secret: sessionSecret(config), secure: 'auto' },
        },
        // The gateway is loaded by NotificationsModule (NotificationsGatewayModule.register()); configured here,
        // in durable mode so the page replays what it missed across a reload.
        pubsub: SAMPLE_PUBSUB,
      }),
    }),
    ProductsModule,
    AuthModule,
    ApiModule,
    OrdersModule,
    NotificationsModule,
    // The live dashboard at /_toolkit, for logged-in users only (SessionGuard reads the login's session cookie):
    // per instance and summed across every instance on this Redis.
    RedisToolkitDashboardModule.register({ path: '/_toolkit', guard: SessionGuard }),
    ObservabilityModule,
  ],
  controllers: [HealthController, PageController],
})
export class AppModule {}
