/**
 * `npm start` as a newcomer runs it: the compiled sample (dist/sample/main.js) in a child process, with neither
 * REDIS_URL nor SESSION_SECRET nor NODE_ENV set. It must start its own redis-server, say that it signs cookies with its
 * development secret, log no warning or error (until 2026-12-07 its 23-character default secret opened every start
 * with the toolkit's weak-secret warning), serve a login, and stop its redis-server on SIGTERM. With
 * NODE_ENV=production and no SESSION_SECRET it must refuse to start (it ran on that public default before).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { ensureBuilt, ROOT } from '../support/built.js';
import { getFreePort } from '../support/redis-server.js';
import { rawCommand } from '../support/resp.js';
import { sharedServers } from '../support/shared-servers.js';
import { waitFor } from '../support/wait.js';

beforeAll(() => ensureBuilt('dist/sample/main.js', ['lib', 'sample']), 180_000);

const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0))
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

interface Started {
  child: ChildProcess;
  output: () => string;
  /** Resolves with the exit code (null when ended by a signal). */
  exited: Promise<number | null>;
}

/** Spawns the sample with this process's env less `unset`, plus `env`. */
function spawnSample(env: Record<string, string>, unset: string[]): Started {
  const base = { ...process.env };
  for (const name of unset) delete base[name];
  const child = spawn(process.execPath, ['dist/sample/main.js'], {
    cwd: ROOT,
    // plain lines: Nest colours its log when NO_COLOR is unset
    env: { ...base, NO_COLOR: '1', HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let output = '';
  child.stdout?.on('data', (c: Buffer) => (output += c.toString('utf8')));
  child.stderr?.on('data', (c: Buffer) => (output += c.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => output, exited };
}

/** Whether the private redis-server answers PING on 127.0.0.1:port. */
const answers = (port: number): Promise<boolean> =>
  rawCommand(port, ['PING']).then(
    () => true,
    () => false,
  );

describe('npm start, as a newcomer runs it', () => {
  it.each(['express', 'fastify'])(
    'PLATFORM=%s, no REDIS_URL, no SESSION_SECRET: its own Redis, the development secret named, no warning, a login, Redis stopped on SIGTERM',
    async (platform) => {
      const port = await getFreePort();
      const sample = spawnSample({ PORT: String(port), PLATFORM: platform }, [
        'REDIS_URL',
        'SESSION_SECRET',
        'NODE_ENV',
      ]);
      const up = await waitFor(
        () => sample.output().includes('Sample app on') || sample.child.exitCode !== null,
        30_000,
      );
      expect({ up, exit: sample.child.exitCode }).toEqual({ up: true, exit: null });
      const lines = sample.output().split('\n');
      const redisPort = Number(
        /started a private redis-server at redis:\/\/127\.0\.0\.1:(\d+)/.exec(sample.output())?.[1],
      );
      expect(redisPort).toBeGreaterThan(0);
      expect(
        lines.filter((l) =>
          l.includes("SESSION_SECRET is not set: session cookies are signed with the sample's development secret"),
        ),
      ).toHaveLength(1);
      expect(lines.filter((l) => /\b(WARN|ERROR)\b/.test(l))).toEqual([]);

      const login = await fetch(`http://127.0.0.1:${port}/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'newcomer' }),
      });
      expect(login.status).toBe(200);
      const cookie = login.headers
        .getSetCookie()
        .map((c) => c.split(';')[0])
        .join('; ');
      const me = await fetch(`http://127.0.0.1:${port}/me`, { headers: { cookie } });
      expect({ status: me.status, user: ((await me.json()) as { userId?: string }).userId }).toEqual({
        status: 200,
        user: 'newcomer',
      });

      expect(await answers(redisPort)).toBe(true);
      sample.child.kill('SIGTERM');
      await sample.exited;
      expect(await waitFor(async () => !(await answers(redisPort)), 5_000)).toBe(true);
      expect(sample.output()).toContain(`with ${platform} (`);
    },
    60_000,
  );

  it('NODE_ENV=production without SESSION_SECRET: refuses to start, naming it', async () => {
    const sample = spawnSample(
      { PORT: String(await getFreePort()), NODE_ENV: 'production', REDIS_URL: sharedServers().single.url },
      ['SESSION_SECRET', 'PLATFORM'],
    );
    const code = await Promise.race([sample.exited, new Promise<'running'>((r) => setTimeout(r, 30_000, 'running'))]);
    expect(code).toBe(1);
    expect(sample.output()).toContain('SESSION_SECRET is not set, and NODE_ENV is production');
    expect(sample.output()).not.toContain('Sample app on');
  }, 60_000);
});
