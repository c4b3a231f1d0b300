import 'reflect-metadata';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { RedisToolkitOptions } from '../../lib/index.js';
import { buildLibForChildren, type LibBuild } from '../support/lock-build.js';
import { sharedServers } from '../support/shared-servers.js';

const run = promisify(execFile);
const WORKER = fileURLToPath(new URL('./fixtures/fence-worker.mjs', import.meta.url));

let build: LibBuild;
beforeAll(async () => {
  build = await buildLibForChildren();
}, 60_000);
afterAll(() => build?.remove());

async function fourProcesses(
  options: RedisToolkitOptions,
  perProcess: number,
): Promise<{ tokens: number[][]; stale: number }> {
  const resource = `fence:${randomUUID()}`;
  const results = await Promise.all(
    Array.from({ length: 4 }, () =>
      run(process.execPath, [WORKER, build.index, JSON.stringify(options), resource, String(perProcess)], {
        timeout: 90_000,
        maxBuffer: 10 * 1024 * 1024,
      }),
    ),
  );
  const parsed = results.map((r) => JSON.parse(r.stdout) as { tokens: number[]; stale: number });
  return { tokens: parsed.map((p) => p.tokens), stale: parsed.reduce((s, p) => s + p.stale, 0) };
}

function expectStrictlyIncreasing(tokens: number[][]): void {
  for (const list of tokens) for (let i = 1; i < list.length; i++) expect(list[i]).toBeGreaterThan(list[i - 1]);
  const all = tokens.flat();
  expect(new Set(all).size).toBe(all.length);
}

describe('fencing tokens across 4 processes', () => {
  it('1,000 acquisitions on one server: every token is new and larger than the last one the storage saw', async () => {
    const startedUs = Date.now() * 1000;
    const { tokens, stale } = await fourProcesses(
      { connection: { url: sharedServers().single.url }, lock: { retry: { delay: 5, jitter: 10 } } },
      250,
    );
    const endedUs = Date.now() * 1000;
    expect(tokens.flat()).toHaveLength(1_000);
    expect(stale).toBe(0);
    expectStrictlyIncreasing(tokens);
    // One counter floored by the Redis clock (µs, same host as this test: 1 ms of slack): every token was drawn
    // during the run, so a lost counter could not send the next one backwards.
    for (const t of tokens.flat()) {
      expect(Number.isSafeInteger(t) && t >= startedUs - 1_000 && t <= endedUs + 1_000).toBe(true);
    }
  }, 120_000);

  it('1,000 acquisitions on a 3-node quorum: strictly increasing too', async () => {
    const { tokens, stale } = await fourProcesses(
      {
        connection: { url: sharedServers().single.url },
        lock: {
          retry: { delay: 10, jitter: 20 },
          quorum: { nodes: sharedServers().quorum.map((q) => ({ url: q.url })) },
        },
      },
      250,
    );
    expect(tokens.flat()).toHaveLength(1_000);
    expect(stale).toBe(0);
    expectStrictlyIncreasing(tokens);
  }, 120_000);
});
