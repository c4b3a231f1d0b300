import 'reflect-metadata';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { INestApplication } from '@nestjs/common';
import type { BrowserContext, Page } from 'playwright-core';
import { createSampleApp } from '../../sample/bootstrap.js';
import { ensureBuilt, ROOT } from '../support/built.js';
import { chromiumAvailable, launchChromium } from '../support/chromium.js';
import { sharedServers } from '../support/shared-servers.js';

/**
 * The dashboard of the sample (mounted at /_toolkit behind its login) in a real browser (Debian's Chromium driven by
 * playwright-core), with two instances of the sample on one Redis (this process and a child running the built
 * sample: diagnostics channels are per process, as in production): log in, open the dashboard, apply load through
 * both instances (cache misses, then hits, then rate-limit refusals) and see the hit-ratio and refusal charts change,
 * summed over the two. Screenshots in test/artifacts/ (one is copied to docs/ for the README). Without Chromium it
 * fails under CI and skips, saying why, only on a developer's machine (as test/pubsub/browser.spec.ts).
 */
const hasChromium = chromiumAvailable();
const ARTIFACTS = fileURLToPath(new URL('../artifacts/', import.meta.url));
/** The default rate-limit policy of the sample's /products routes for this test: 40 per minute per client IP. */
const LIMIT = 40;
const saved = {
  REDIS_URL: process.env.REDIS_URL,
  REDIS_KEY_PREFIX: process.env.REDIS_KEY_PREFIX,
  RATE_LIMIT_LIMIT: process.env.RATE_LIMIT_LIMIT,
};
const apps: INestApplication[] = [];
const children: ChildProcess[] = [];

/** The second instance runs the compiled sample. */
beforeAll(() => {
  if (hasChromium) ensureBuilt('dist/sample/main.js', ['lib', 'sample']);
}, 180_000);
let context: BrowserContext | undefined;

afterEach(async () => {
  await context?.close();
  context = undefined;
  for (const child of children.splice(0)) child.kill('SIGKILL');
  await Promise.all(apps.splice(0).map((a) => a.close()));
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

async function bootSample(): Promise<string> {
  const app = await createSampleApp('express', { logger: ['error'] });
  apps.push(app);
  await app.listen(0, '127.0.0.1');
  return `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** `node dist/sample/main.js` (as `npm start`) with this process's env; resolves with its URL once it listens. */
async function spawnSample(): Promise<string> {
  const port = await freePort();
  const child = spawn(process.execPath, ['dist/sample/main.js'], {
    cwd: ROOT,
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', PLATFORM: 'express' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the sample did not start within 30 s:\n${output}`)), 30_000);
    const read = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('Sample app on')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', read);
    child.stderr?.on('data', read);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the sample exited with ${code}:\n${output}`));
    });
  });
  return `http://127.0.0.1:${port}`;
}

/** The latest summed value a chart shows (`data-last`), or null before it has one. */
async function chartValue(page: Page, chart: string): Promise<number | null> {
  const last = await page.getAttribute(`#chart-${chart}`, 'data-last');
  return last ? Number(last) : null;
}

async function until(page: Page, what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`the dashboard did not show ${what} within 15 s`);
    await page.waitForTimeout(200);
  }
}

(hasChromium ? it : it.skip)(
  'sample dashboard: log in, load two instances, see the summed hit ratio and refusals change',
  async () => {
    process.env.REDIS_URL = sharedServers().single.url;
    process.env.REDIS_KEY_PREFIX = `rtk-dash-browser-${randomBytes(4).toString('hex')}:`;
    process.env.RATE_LIMIT_LIMIT = String(LIMIT);
    const [a, b] = [await bootSample(), await spawnSample()];

    context = await launchChromium({ viewport: { width: 1280, height: 900 } });
    const page = context.pages()[0] ?? (await context.newPage());
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));

    // Behind the sample's login: 401 without its session cookie, the page with it.
    expect((await page.goto(`${a}/_toolkit`))?.status()).toBe(401);
    await page.goto(`${a}/`);
    await page.fill('#name', 'operator');
    await page.click('#login button');
    await page.waitForSelector('#status.live', { timeout: 10_000 });
    expect((await page.goto(`${a}/_toolkit`))?.status()).toBe(200);
    await page.waitForSelector('#status.live', { timeout: 10_000 });
    await until(page, 'both instances', async () => (await page.getAttribute('#instances', 'data-count')) === '2');

    const get = (base: string, path: string) => fetch(base + path).then((r) => r.status);
    const put = (base: string, path: string) =>
      fetch(base + path, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ priceCents: 500 }),
      }).then((r) => r.status);

    // 1. Misses only: 10 unknown products through each instance (each answered 404 and cached as "not found").
    const misses = await Promise.all(
      Array.from({ length: 20 }, (_, i) => get(i % 2 ? b : a, `/products/missing-${i}`)),
    );
    expect(misses.every((s) => s === 404)).toBe(true);
    await until(page, 'a hit ratio of 0 %', async () => (await chartValue(page, 'hit-ratio')) === 0);
    expect(await chartValue(page, 'refusals')).toBe(0);
    expect(await page.getAttribute('#chart-hit-ratio', 'data-lines')).toBe('3'); // two instances and their sum

    // 2. Mostly hits: the same product 9 times on each instance (one load, then Redis or L1 answers), and two writes
    // that evict tags (the hot tags table).
    expect(await put(a, '/products/1')).toBe(200);
    expect(await put(b, '/products/2')).toBe(200);
    const hits = [];
    for (let i = 0; i < 18; i++) hits.push(await get(i % 2 ? b : a, '/products/1'));
    expect(hits.every((s) => s === 200)).toBe(true);
    await until(page, 'a hit ratio above 80 %', async () => ((await chartValue(page, 'hit-ratio')) ?? 0) > 80);
    expect(await chartValue(page, 'refusals')).toBe(0);

    // 3. Over the limit: GET /products/:id has one counter per client (the writes count on PUT's), 38 of its 40 are
    // used, so 28 of these 30 are refused, on both instances, and summed.
    const refused = await Promise.all(Array.from({ length: 30 }, (_, i) => get(i % 2 ? b : a, '/products/3')));
    const refusals = refused.filter((s) => s === 429).length;
    expect(refusals).toBeGreaterThanOrEqual(20);
    await until(page, 'refusals', async () => ((await chartValue(page, 'refusals')) ?? 0) > 0);
    // Every refusal of both instances, summed once: the policies table adds up the last minute of sums.
    await until(page, `${refusals} refusals in the policies table`, async () => {
      const rows = await page.locator('#policies tbody tr').allTextContents();
      return (
        rows.length === 1 && Number((await page.textContent('#policies tbody td:nth-child(3)')) ?? -1) === refusals
      );
    });
    expect(await page.locator('#hot-tags tbody td:first-child').allTextContents()).toEqual(
      expect.arrayContaining(['product:1', 'product:2', 'products:list']),
    );
    // The sample's page, charts and stream raised no error in the browser.
    expect(errors).toEqual([]);

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });
    await page.setViewportSize({ width: 390, height: 900 });
    expect(await page.evaluate<number>('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-390px.png'), fullPage: true });
  },
  120_000,
);
