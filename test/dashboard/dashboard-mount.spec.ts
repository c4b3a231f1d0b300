import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { InvalidOptionsError } from '../../lib/index.js';
import { DashboardService, RedisToolkitDashboardModule } from '../../lib/dashboard/index.js';
import { resolveDashboardOptions } from '../../lib/dashboard/dashboard.options.js';
import { chromiumAvailable, launchChromium } from '../support/chromium.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

/**
 * The dashboard mounted under more than its `path`: `app.setGlobalPrefix('api')` (or RouterModule, or a reverse proxy
 * that strips a path) serves the page at `/api/_toolkit`. The page must load its script and open its stream there, in
 * a real browser, on Express and Fastify: an absolute `/_toolkit/...` in the page misses the prefix (404) and the page
 * stays at "connecting…" without a word.
 */
const hasChromium = chromiumAvailable();

afterEach(() => closeToolkitApps());

async function prefixedApp(platform: (typeof PLATFORMS)[number]): Promise<string> {
  const app = await createToolkitApp({
    keyPrefix: `rtk-dash-mount-${randomBytes(4).toString('hex')}:`,
    imports: [RedisToolkitDashboardModule.register({ unsafeNoAuth: true, intervalMs: 250, path: '/ops/toolkit' })],
    http: true,
    platform,
    beforeInit: (a) => {
      a.setGlobalPrefix('api');
    },
  });
  const { port } = app.app.getHttpServer().address() as AddressInfo;
  return `http://127.0.0.1:${port}`;
}

describe.each(PLATFORMS)('under app.setGlobalPrefix on %s', (platform) => {
  it('the page links its script under the prefix, and nothing under the bare path', async () => {
    const url = await prefixedApp(platform);
    const page = await fetch(`${url}/api/ops/toolkit`);
    expect(page.status).toBe(200);
    const html = await page.text();
    const src = /<script src="([^"]+)"><\/script>/.exec(html)?.[1];
    expect(src).toBeDefined();
    const script = new URL(src as string, `${url}/api/ops/toolkit`);
    expect(script.pathname).toBe('/api/ops/toolkit/dashboard.js');
    const res = await fetch(script);
    expect([res.status, res.headers.get('content-type')]).toEqual([200, 'text/javascript; charset=utf-8']);
    expect((await fetch(`${url}/ops/toolkit/dashboard.js`)).status).toBe(404);
  });

  (hasChromium ? it : it.skip)('in a browser: the page goes live and draws this instance', async () => {
    const url = await prefixedApp(platform);
    const context = await launchChromium();
    const tab = await context.newPage();
    const failed: string[] = [];
    tab.on('response', (r) => {
      if (r.status() >= 400) failed.push(`${r.status()} ${new URL(r.url()).pathname}`);
    });
    try {
      // with and without a trailing slash where the platform serves the page at both
      const paths = ['/api/ops/toolkit'];
      if ((await fetch(`${url}/api/ops/toolkit/`)).status === 200) paths.push('/api/ops/toolkit/');
      for (const path of paths) {
        await tab.goto(url + path);
        const live = await tab
          .waitForSelector('#status.live', { timeout: 5_000 })
          .then(() => true)
          .catch(() => false);
        const count = await tab
          .waitForSelector('#instances[data-count="1"]', { timeout: 5_000 })
          .then(() => true)
          .catch(() => false);
        expect({ path, live, count, failed }).toEqual({ path, live: true, count: true, failed: [] });
      }
    } finally {
      await context.close(); // before the app closes: its open stream and keep-alive connections go with it
    }
  });
});

it('a `.` or `..` segment in path is refused (a browser resolves it away before asking)', () => {
  for (const path of ['/ops/..', '/./toolkit', '/ops/../toolkit']) {
    expect(() => resolveDashboardOptions({ unsafeNoAuth: true, path })).toThrow(InvalidOptionsError);
  }
  expect(resolveDashboardOptions({ unsafeNoAuth: true, path: '/.well-known/toolkit' }).path).toBe(
    '/.well-known/toolkit',
  );
});

describe('the page follows the server options', () => {
  (hasChromium ? it : it.skip)(
    '`history` intervals wide, and an instance kept for instanceTtlMs, as the server',
    async () => {
      const keyPrefix = `rtk-dash-page-${randomBytes(4).toString('hex')}:`;
      const options = { unsafeNoAuth: true, intervalMs: 250, history: 300, instanceTtlMs: 10_000 };
      const boot = (http: boolean) =>
        createToolkitApp({ keyPrefix, imports: [RedisToolkitDashboardModule.register(options)], http });
      const a = await boot(true);
      const b = await boot(false);
      const { port } = a.app.getHttpServer().address() as AddressInfo;
      const context = await launchChromium();
      try {
        const tab = await context.newPage();
        await tab.goto(`http://127.0.0.1:${port}/_toolkit`);
        await tab.waitForSelector('#instances[data-count="2"]', { timeout: 10_000 });
        // the time axis spans history × intervalMs = 75 s (the server keeps 300 frames), whatever the sum's length now
        const axis = await tab.$$eval('#chart-hit-ratio text', (texts) => texts.map((t) => t.textContent));
        const span = axis.find((t) => t?.startsWith('-'));
        // b stops: the server keeps it in the sum for instanceTtlMs (10 s), and so does the page
        await b.close();
        await sleep(3_000); // 12 intervals: more than the 5 the page used to wait, well short of 10 s
        const dashboard = a.get(DashboardService);
        const onServer = Object.keys(dashboard.snapshot().instances).length;
        const onPage = await tab.$eval('#instances', (el) => el.getAttribute('data-count'));
        expect({ span, onServer, onPage }).toEqual({ span: '-75 s', onServer: 2, onPage: '2' });
      } finally {
        await context.close();
      }
    },
  );
});
