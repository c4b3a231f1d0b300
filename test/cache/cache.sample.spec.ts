import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import request from 'supertest';
import { ProductsModule } from '../../sample/products/products.module.js';
import { PLATFORMS, closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

afterEach(closeToolkitApps);

describe.each(PLATFORMS)('sample: /products on %s', (platform) => {
  it('answers X-Cache MISS, HIT, STALE and evicts by tag on PUT', async () => {
    const app = await createToolkitApp({
      keyPrefix: `rtk-s${randomBytes(4).toString('hex')}:`,
      // 3 s fresh: the HIT checks right after a MISS hold on a busy machine; STALE is checked after it, measured.
      cache: { defaultTtl: 3_000, staleTtl: 10_000, beta: 0 },
      imports: [ProductsModule],
      http: true,
      platform,
    });
    const server = app.app.getHttpServer();
    expect((await request(server).get('/products').expect(200)).headers['x-cache']).toBe('MISS');
    const hit = await request(server).get('/products').expect(200);
    expect(hit.headers['x-cache']).toBe('HIT');
    expect(hit.body).toHaveLength(3);

    expect((await request(server).get('/products/1').expect(200)).headers['x-cache']).toBe('MISS');
    expect((await request(server).get('/products/1').expect(200)).headers['x-cache']).toBe('HIT');
    // Not found is cached too (the loader returns null).
    expect((await request(server).get('/products/99').expect(404)).headers['x-cache']).toBe('MISS');
    expect((await request(server).get('/products/99').expect(404)).headers['x-cache']).toBe('HIT');

    await request(server).put('/products/1').send({ name: 'Sencha' }).expect(200);
    const after = await request(server).get('/products/1').expect(200);
    const writtenBy = Date.now(); // the fresh entry was written before the answer
    expect(after.headers['x-cache']).toBe('MISS');
    expect(after.body.name).toBe('Sencha');
    const list = await request(server).get('/products').expect(200);
    expect(list.headers['x-cache']).toBe('MISS');
    expect(list.body.find((p: { id: string }) => p.id === '1').name).toBe('Sencha');

    await sleep(Math.max(0, writtenBy + 3_000 + 100 - Date.now()));
    const stale = await request(server).get('/products/1').expect(200);
    expect(stale.headers['x-cache']).toBe('STALE');
    expect(stale.body.name).toBe('Sencha');
  });
});
