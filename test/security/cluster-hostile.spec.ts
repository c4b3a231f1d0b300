/**
 * Hostile configuration on Redis Cluster (issue 17, second pass): braces in `keyPrefix` take the hash tag away from
 * the toolkit. `{app}:` put every key of every feature in one slot (slot 6805: one master takes all the traffic);
 * `app{}:` is an empty tag, so Redis hashes whole keys and a lock key and its fence counter land in different slots
 * (slots 10742 and 8057: every acquisition failed with CROSSSLOT). Both are refused at start.
 */
import 'reflect-metadata';
import { InvalidOptionsError, LockService } from '../../lib/index.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

describe.each(['single', 'cluster'] as const)('keyPrefix with braces (%s)', (target) => {
  afterEach(closeToolkitApps);

  it.each(['{app}:', 'app{}:', 'app}:', 'a{b'])(
    'keyPrefix %j is refused with InvalidOptionsError',
    async (keyPrefix) => {
      const error = await createToolkitApp({ target, keyPrefix }).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(error).toBeInstanceOf(InvalidOptionsError);
      expect((error as Error).message).toMatch(/keyPrefix.*must not contain/);
    },
  );

  it('a prefix without braces keeps each lock and its fence counter in one slot (acquire works)', async () => {
    const { get } = await createToolkitApp({ target, keyPrefix: 'app:' });
    const held = await get(LockService).acquire(`brace-free-${Date.now()}`, { ttl: 2_000 });
    expect(held.fencingToken).toBeGreaterThan(0);
    await held.release();
  });
});
