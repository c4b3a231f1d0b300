import { Controller, Get } from '@nestjs/common';
import { RedisToolkitHealth, type RedisToolkitHealthResult } from '../../lib/index.js';

@Controller('health')
export class HealthController {
  constructor(private readonly health: RedisToolkitHealth) {}

  @Get()
  check(): Promise<RedisToolkitHealthResult> {
    return this.health.check();
  }
}
