import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { RedisToolkitDashboardModule } from '../../lib/dashboard/index.js';
import { MAX_VIEWERS } from '../../lib/dashboard/dashboard.service.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

/**
 * The event stream is the dashboard's one open-ended resource: each page holds a listener until it leaves. At most
 * MAX_VIEWERS pages per instance (a 503 after, so a flood of pages costs a bounded number of listeners), and a page
 * that leaves must free its place, or MAX_VIEWERS visits would lock every operator out until a restart.
 */
afterEach(() => closeToolkitApps());

describe.each(PLATFORMS)('open streams on %s', (platform) => {
  it('at most MAX_VIEWERS pages per instance (503 after); a page that leaves frees its place', async () => {
    const app = await createToolkitApp({
      keyPrefix: `rtk-dash-streams-${randomBytes(4).toString('hex')}:`,
      imports: [RedisToolkitDashboardModule.register({ unsafeNoAuth: true, intervalMs: 60_000 })],
      http: true,
      platform,
    });
    const { port } = app.app.getHttpServer().address() as AddressInfo;
    const events = `http://127.0.0.1:${port}/_toolkit/events`;
    const open = async () => {
      const abort = new AbortController();
      const res = await fetch(events, { signal: abort.signal });
      if (res.status === 200) await res.body!.getReader().read(); // the snapshot: the stream is set up
      return { status: res.status, leave: () => abort.abort() };
    };
    const pages = [];
    for (let i = 0; i < MAX_VIEWERS; i++) pages.push(await open());
    const extra = await open();
    expect([pages.filter((p) => p.status === 200).length, extra.status]).toEqual([MAX_VIEWERS, 503]);
    for (const p of pages) p.leave();
    // each left page's place is free again: MAX_VIEWERS new pages get in
    const again: Awaited<ReturnType<typeof open>>[] = [];
    expect(
      await waitFor(async () => {
        const page = await open();
        if (page.status === 200) again.push(page);
        return again.length === MAX_VIEWERS;
      }, 10_000),
    ).toBe(true);
    for (const p of again) p.leave();
  });
});
