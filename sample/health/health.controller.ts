import { Controller, Get } from '@nestjs/common';
import { RedisToolkitHealth } from '../../lib/index.js';
import { type RedisToolkitHealthResult } from '../../lib/advanced.js';

@Controller('health')
export class HealthController {
  constructor(private readonly health: RedisToolkitHealth) {}

  @Get()
  check(): Promise<RedisToolkitHealthResult> {
    return this.health.check();
  }
}
