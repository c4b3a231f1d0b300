import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { InvalidOptionsError } from '../../lib/index.js';
import { RedisToolkitDashboardModule } from '../../lib/dashboard/index.js';
import { resolveDashboardOptions } from '../../lib/dashboard/dashboard.options.js';
import { chromiumAvailable, launchChromium } from '../support/chromium.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS } from '../support/toolkit-app.js';

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
