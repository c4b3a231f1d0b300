/**
 * A `using` section still running at app.close() loses its auto-extension (lock-shutdown.spec) and, when it ends, its
 * release finds the connections quit. Until 2026-12-04 that failed release was logged twice: by the lock's failure
 * policy as an outage (on a quorum: a node 'failed a call') and by the section's end (runHolding), neither naming the
 * shutdown. Now once, naming the lock, when it expires, and the shutdown.
 */
import 'reflect-metadata';
import { LockLostError, LockService, RedisUnavailableError } from '../../lib/index.js';
import { LOCK_MODES, lockAppOptions, unique } from '../support/lock-modes.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { settleWithin, sleep } from '../support/wait.js';

afterEach(closeToolkitApps);

/** What `p` settles with: its error, or 'resolved'. */
const settled = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => 'resolved',
    (err: unknown) => err,
  );

/** A line about a release that failed: ours, the failure policy's, or a quorum node's failed call. */
const ABOUT_A_RELEASE = /release of|releasing|not released, it expires|failed a call/;

describe.each(LOCK_MODES)('app.close() during a using section on %s', (mode) => {
  it('logs its failed release once, naming the lock and the shutdown', async () => {
    const { warnings, errors, logger } = recordingLogger();
    const { get, close } = await createToolkitApp({ ...lockAppOptions(mode), logger });
    const locks = get(LockService);
    const resource = unique('down-log');
    let running = false;
    const section = settled(
      locks.using(resource, { ttl: 20_000 }, (signal) => {
        running = true;
        return new Promise((resolve) => signal.addEventListener('abort', () => resolve('stopped')));
      }),
    );
    await sleep(50);
    expect(running).toBe(true);
    const [warned, failed] = [warnings.length, errors.length];
    await close();
    const ended = await settleWithin(section, 3_000, 'pending');
    expect(ended).toBeInstanceOf(LockLostError);
    await sleep(300); // what the end of the section logs
    const lines = [...warnings.slice(warned), ...errors.slice(failed)];
    const releases = lines.filter((line) => ABOUT_A_RELEASE.test(line));
    // before: 2 (single, cluster: 'lock release of "r" failed: ...; failing' and 'releasing the lock on "r" failed;
    // it expires by itself: ...'; quorum: 'lock quorum node ... failed a call (Connection is closed.) ...' and the
    // latter)
    expect(releases).toHaveLength(1);
    expect(releases[0]).toContain(`the lock on "${resource}" was not released, it expires by itself at 20`);
    expect(releases[0]).toContain('the application shut down');
    // the other line of the section: its lock lost, as lock-shutdown.spec describes
    expect(lines.filter((line) => !ABOUT_A_RELEASE.test(line))).toEqual([
      expect.stringMatching(/was lost: .*no longer extended: the application shut down/),
    ]);
    expect(locks.stats().unavailable).toBe(0); // not an outage
  });

  it('a release called after close rejects with RedisUnavailableError naming the shutdown, and logs nothing', async () => {
    const { warnings, errors, logger } = recordingLogger();
    const { get, close } = await createToolkitApp({ ...lockAppOptions(mode), logger });
    const locks = get(LockService);
    const lock = await locks.acquire(unique('down-release'), { ttl: 20_000 });
    const [warned, failed] = [warnings.length, errors.length];
    await close();
    const err = await settled(lock.release());
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect((err as Error).message).toMatch(/^lock release of "down-release:.*" failed: the application shut down/);
    await sleep(300);
    expect([...warnings.slice(warned), ...errors.slice(failed)]).toEqual([]);
  });
});
