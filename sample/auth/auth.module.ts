import { type MiddlewareConsumer, Module, type NestModule } from '@nestjs/common';
import { SessionMiddleware } from '../../lib/index.js';
import { AuthController } from './auth.controller.js';

/**
 * Sessions sample: POST /auth/login { username }, GET /me, POST /auth/logout, POST /auth/logout-everywhere.
 * SessionMiddleware runs on these routes only, so a Redis outage answers 503 here and leaves /health alone.
 */
@Module({ controllers: [AuthController] })
export class AuthModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(SessionMiddleware).forRoutes(AuthController);
  }
}
