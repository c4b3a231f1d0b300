/**
 * Chromium for the browser tests (test/pubsub/browser.spec.ts, test/dashboard/browser.spec.ts): Debian's, driven by
 * playwright-core; CHROMIUM_PATH picks another. Without it a browser test fails under CI (CI installs it: a missing
 * browser there is a broken CI, not a reason to skip) and skips, saying why, only on a developer's machine.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BrowserContext, chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/**
 * Whether Chromium is there. When it is not, says so on stderr and, under CI, adds a test that fails: call it once at
 * the top of a browser test file and skip the browser tests on false.
 */
export function chromiumAvailable(): boolean {
  if (existsSync(CHROMIUM)) return true;
  process.stderr.write(
    `browser test skipped: no Chromium at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_PATH)\n`,
  );
  if (process.env.CI)
    it('Chromium is installed (CI must run the browser test)', () => {
      throw new Error(`no Chromium at ${CHROMIUM} under CI: .ci/run installs it (apt-get install -y chromium)`);
    });
  return false;
}

/** Headless Chromium in a fresh profile directory, removed by the context's close(). */
export async function launchChromium(
  options: { viewport?: { width: number; height: number } } = {},
): Promise<BrowserContext> {
  const profile = mkdtempSync(join(tmpdir(), 'rtk-chromium-'));
  try {
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      ...options,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
    // After close() has resolved (the browser has exited), not on its 'close' event: Chromium may still be writing
    // into the profile then (ENOTEMPTY).
    const close = context.close.bind(context);
    context.close = async (...args: Parameters<BrowserContext['close']>) => {
      await close(...args);
      rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
    };
    return context;
  } catch (err) {
    rmSync(profile, { recursive: true, force: true });
    throw err;
  }
}
