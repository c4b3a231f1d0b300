import { Module } from '@nestjs/common';
import { ApiController } from './api.controller.js';

/** Rate limiting sample: `/api/*` at 100 per minute per IP, `/api/export` also limited per user. */
@Module({ controllers: [ApiController] })
export class ApiModule {}
