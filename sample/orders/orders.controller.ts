import {
  ArgumentsHost,
  Body,
  Catch,
  Controller,
  Get,
  HttpStatus,
  NotFoundException,
  Param,
  Post,
  UseFilters,
  type ExceptionFilter,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { LockLostError, LockNotAcquiredError, RedisUnavailableError } from '../../lib/index.js';
import { OrdersReportJob } from './orders.report.js';
import { OrdersService, type Payment } from './orders.service.js';

/**
 * Lock errors as HTTP: busy → 409, lost → 409, Redis down → 503 (fail closed: nothing was charged unlocked).
 * Answers through Nest's HTTP adapter, so the same filter serves Express and Fastify.
 */
@Catch(LockNotAcquiredError, LockLostError, RedisUnavailableError)
export class LockErrorsFilter implements ExceptionFilter {
  constructor(private readonly adapterHost: HttpAdapterHost) {}

  catch(err: Error, host: ArgumentsHost): void {
    const status = err instanceof RedisUnavailableError ? HttpStatus.SERVICE_UNAVAILABLE : HttpStatus.CONFLICT;
    const body = { statusCode: status, error: err.name, message: err.message };
    this.adapterHost.httpAdapter.reply(host.switchToHttp().getResponse(), body, status);
  }
}

@Controller('orders')
@UseFilters(LockErrorsFilter)
export class OrdersController {
  constructor(
    private readonly orders: OrdersService,
    private readonly report: OrdersReportJob,
  ) {}

  /** POST /orders/42/pay { "amount": 1990 } — submit twice at once: one charge, the same payment twice. */
  @Post(':id/pay')
  async pay(@Param('id') id: string, @Body() body: { amount?: number }): Promise<Payment & { created: boolean }> {
    const { payment, created } = await this.orders.pay(id, Number(body?.amount ?? 0));
    return { ...payment, created };
  }

  @Get(':id/payment')
  async payment(@Param('id') id: string): Promise<Payment> {
    const payment = await this.orders.payment(id);
    if (!payment) throw new NotFoundException(`order ${id} is not paid`);
    return payment;
  }

  /** Runs the report now, like the scheduler does (skipped, returning { ran: false }, when another instance runs it). */
  @Post('report')
  async runReport(): Promise<{ ran: boolean; lastRun: OrdersReportJob['lastRun'] }> {
    const run = await this.report.generate();
    return { ran: run !== undefined, lastRun: this.report.lastRun };
  }
}
