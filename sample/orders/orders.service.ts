import { Inject, Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { LockService, REDIS_CLIENT } from '../../lib/index.js';
import { KeyBuilder } from '../../lib/advanced.js';
import type { Redis, Cluster } from 'ioredis';

export interface Payment {
  orderId: string;
  paymentId: string;
  amount: number;
  paidAt: string;
  /** The lock's fencing token when the payment was written. */
  fence: number;
}

/**
 * Writes the payment only if no holder with a newer fencing token wrote first: the storage-side check that makes a
 * stale lock holder (paused past its ttl) harmless. Here the "storage" is a Redis hash; a SQL table would use
 * `UPDATE ... WHERE fence < $token`.
 */
const WRITE_IF_NEWER = `
local fence = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
if fence >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'fence', ARGV[1], 'payment', ARGV[2])
return 1`;

@Injectable()
export class OrdersService {
  /** How many times the (simulated) payment provider was charged, for the demo and its test. */
  charges = 0;

  constructor(
    private readonly locks: LockService,
    private readonly keys: KeyBuilder,
    @Inject(REDIS_CLIENT) private readonly redis: Redis | Cluster,
  ) {}

  /**
   * Idempotent under concurrent double submits: the second submit waits for the first (same lock), then finds the
   * payment and returns it instead of charging again.
   */
  async pay(orderId: string, amount: number): Promise<{ payment: Payment; created: boolean }> {
    const key = this.keys.tagged('orders', orderId, ':payment');
    return this.locks.using(`order:${orderId}`, { ttl: 5_000, waitMs: 10_000 }, async (signal, lock) => {
      const existing = await this.redis.hget(key, 'payment');
      if (existing) return { payment: JSON.parse(existing) as Payment, created: false };
      await this.charge(amount, signal);
      const payment: Payment = {
        orderId,
        paymentId: randomUUID(),
        amount,
        paidAt: new Date().toISOString(),
        fence: lock.fencingToken,
      };
      const written = await this.redis.eval(WRITE_IF_NEWER, 1, key, String(lock.fencingToken), JSON.stringify(payment));
      if (written !== 1) throw new Error(`payment for order ${orderId} was written by a newer lock holder`);
      return { payment, created: true };
    });
  }

  async payment(orderId: string): Promise<Payment | undefined> {
    const raw = await this.redis.hget(this.keys.tagged('orders', orderId, ':payment'), 'payment');
    return raw ? (JSON.parse(raw) as Payment) : undefined;
  }

  /** Stands in for a payment provider call; stops if the lock was lost meanwhile. */
  private async charge(_amount: number, signal: AbortSignal): Promise<void> {
    await new Promise((r) => setTimeout(r, 300));
    signal.throwIfAborted();
    this.charges++;
  }
}
