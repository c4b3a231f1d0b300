import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { OrdersModule } from '../../sample/orders/orders.module.js';
import { OrdersService } from '../../sample/orders/orders.service.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

describe('sample: orders', () => {
  it('concurrent double submits of a payment across two instances charge once and return the same payment', async () => {
    const prefix = `rtk-sample-${randomUUID()}:`; // same Redis and prefix for both instances
    const instances = await Promise.all(
      [0, 1].map(() => createToolkitApp({ imports: [OrdersModule], http: true, keyPrefix: prefix })),
    );
    const order = randomUUID();
    const startedUs = Date.now() * 1000;
    const responses = await Promise.all(
      [0, 1, 0, 1].map((i) =>
        request(instances[i].app.getHttpServer()).post(`/orders/${order}/pay`).send({ amount: 1990 }),
      ),
    );
    expect(responses.map((r) => r.status)).toEqual([201, 201, 201, 201]);
    expect(new Set(responses.map((r) => (r.body as { paymentId: string }).paymentId)).size).toBe(1);
    expect(responses.filter((r) => (r.body as { created: boolean }).created)).toHaveLength(1);
    const charges = instances.reduce((sum, i) => sum + i.get(OrdersService).charges, 0);
    expect(charges).toBe(1);
    const stored = await request(instances[0].app.getHttpServer()).get(`/orders/${order}/payment`);
    expect(stored.body).toMatchObject({ orderId: order, amount: 1990 });
    // the first holder's fencing token: the Redis clock in µs when it acquired (same host: 1 ms of slack)
    expect((stored.body as { fence: number }).fence).toBeGreaterThanOrEqual(startedUs - 1_000);
    expect((stored.body as { fence: number }).fence).toBeLessThanOrEqual(Date.now() * 1000 + 1_000);
  });

  it('the report job runs once when three instances trigger it at the same time', async () => {
    const prefix = `rtk-sample-${randomUUID()}:`;
    const instances = await Promise.all(
      [0, 1, 2].map(() => createToolkitApp({ imports: [OrdersModule], http: true, keyPrefix: prefix })),
    );
    const results = await Promise.all(instances.map((i) => request(i.app.getHttpServer()).post('/orders/report')));
    expect(results.filter((r) => (r.body as { ran: boolean }).ran)).toHaveLength(1);
  });
});
