import { Module } from '@nestjs/common';
import { ScheduleModule } from '@nestjs/schedule';
import { OrdersController } from './orders.controller.js';
import { OrdersReportJob } from './orders.report.js';
import { OrdersService } from './orders.service.js';

/**
 * Locks in the sample: a scheduled report that runs once across every app instance (@WithLock onBusy 'skip'), and an
 * order payment endpoint that is idempotent under concurrent double submits (LockService.using + fencing token).
 */
@Module({
  imports: [ScheduleModule.forRoot()],
  controllers: [OrdersController],
  providers: [OrdersService, OrdersReportJob],
})
export class OrdersModule {}
