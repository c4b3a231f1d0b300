/**
 * PSUBSCRIBE in the start-up permission check. Pub/sub's pattern subscriptions (pubsub.subscribe('news:*'), a gateway
 * client's pattern) send PSUBSCRIBE and PUNSUBSCRIBE. The check asked for neither, so a user denied the command
 * started without a word and learnt of it at the first pattern subscription. It now asks for both on the prefix's own
 * pattern (`rtk:*`, which `&rtk:*` grants literally), and a denial is a warning naming PSUBSCRIBE and the rules (not a
 * refusal: an app that subscribes to no pattern needs neither; test/pubsub/pubsub.acl-patterns.spec.ts keeps that);
 * the subscription itself still fails typed. Where no check is possible (the probe of Redis < 7: no script may run a
 * subscription) the warning of the unchecked commands names them, as it names SUBSCRIBE.
 */
import 'reflect-metadata';
import { Redis } from 'ioredis';
import { PubSubService, RedisPermissionError } from '../../lib/index.js';
import { RedisConnection, RedisConnections } from '../../lib/advanced.js';
import { DEFAULT_CONNECTION_NAME } from '../../lib/connection/connection.options.js';
import { RedisPermissionsCheck } from '../../lib/connection/redis-permissions.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const redis = usePrivateRedis();
const PASSWORD = `acl-${Math.random().toString(36).slice(2)}`;
/** Every command and key, channels under the prefix only (as docs/security.md's line: `&rtk:*`). */
const BASE = ['on', `>${PASSWORD}`, '~*', '+@all', 'resetchannels', '&rtk:*', '&__redis__:invalidate'];
let admin: Redis;
beforeAll(() => {
  admin = trackForCleanup(new Redis(redis.server.port, '127.0.0.1', { lazyConnect: true }));
});
const setUser = (...rules: string[]) => admin.call('acl', 'setuser', 'app', 'reset', ...BASE, ...rules);
const target = () => ({ url: `redis://app:${PASSWORD}@127.0.0.1:${redis.server.port}` });
const aboutPatterns = (warnings: string[]) => warnings.filter((w) => w.includes('PSUBSCRIBE'));

describe('start-up check: PSUBSCRIBE', () => {
  it.each([
    ['ACL DRYRUN', []],
    ['redis.acl_check_cmd (no ACL DRYRUN)', ['-acl|dryrun']],
  ])('denied (%s): the app starts, one warning names it and the rules; a pattern then fails typed', async (_, more) => {
    await setUser('-psubscribe', ...more);
    const { warnings, errors, logger } = recordingLogger();
    const app = await createToolkitApp({ target: target(), logger });
    // before: no warning at all (the check did not ask for PSUBSCRIBE)
    expect(aboutPatterns(warnings)).toHaveLength(1);
    const [warning] = aboutPatterns(warnings);
    expect(warning).toMatch(/^Redis ACL user cannot run PSUBSCRIBE on the pattern "rtk:\*"/);
    expect(warning).not.toContain('PUNSUBSCRIBE'); // granted
    expect(warning).toContain('+psubscribe +punsubscribe');
    expect(warning).toContain('`&rtk:ps:news:*`');
    expect(warning).toContain('channel subscriptions are unaffected');
    expect(errors).toEqual([]);
    const pubsub = app.get(PubSubService);
    const off = await pubsub.subscribe('news', () => undefined); // channels work
    await off();
    await expect(pubsub.subscribe('news:*', () => undefined)).rejects.toBeInstanceOf(RedisPermissionError);
  });

  it('PUNSUBSCRIBE denied too: both named in one warning', async () => {
    await setUser('-psubscribe', '-punsubscribe');
    const { warnings, logger } = recordingLogger();
    await createToolkitApp({ target: target(), logger });
    expect(aboutPatterns(warnings)).toEqual([
      expect.stringMatching(/^Redis ACL user cannot run PSUBSCRIBE or PUNSUBSCRIBE on the pattern "rtk:\*"/),
    ]);
  });

  it('granted with `&rtk:*` (the documented channel rule): no warning', async () => {
    await setUser();
    const { warnings, logger } = recordingLogger();
    await createToolkitApp({ target: target(), logger });
    expect(aboutPatterns(warnings)).toEqual([]);
  });

  it('another keyPrefix: checked with its own pattern, the rule named with it', async () => {
    await admin.call('acl', 'setuser', 'app', 'reset', ...BASE, '&app:*', '-psubscribe');
    const { warnings, logger } = recordingLogger();
    await createToolkitApp({ target: target(), keyPrefix: 'app:', logger });
    expect(aboutPatterns(warnings)).toHaveLength(1);
    expect(aboutPatterns(warnings)[0]).toMatch(/PSUBSCRIBE on the pattern "app:\*".*`&app:ps:news:\*`/s);
  });

  it('pub/sub not on the connection (a feature list without it): not asked', async () => {
    await setUser('-psubscribe');
    const { warnings, logger } = recordingLogger();
    await createToolkitApp({
      target: target(),
      connections: { other: { url: `redis://127.0.0.1:${redis.server.port}` } },
      pubsub: { connection: 'other' },
      logger,
    } as Parameters<typeof createToolkitApp>[0]);
    expect(aboutPatterns(warnings)).toEqual([]);
  });

  it('the probe of Redis < 7 cannot run it in a script: the unchecked warning names it beside SUBSCRIBE', async () => {
    await setUser('-psubscribe');
    const app = await createToolkitApp({ target: target() });
    const warnings: string[] = [];
    const check = new RedisPermissionsCheck(app.get(RedisConnections), {
      keyPrefix: 'rtk:',
      lazyConnect: false,
      shardedPubSub: false,
      method: 'probe',
    });
    (check as unknown as { logger: { warn(m: string): void } }).logger = { warn: (m) => void warnings.push(m) };
    await check.check(DEFAULT_CONNECTION_NAME, app.get(RedisConnection));
    // before: 'not checked ...: pub/sub: SUBSCRIBE, UNSUBSCRIBE' (PSUBSCRIBE not asked at all)
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(
      /not checked, as no script may run them: .*pub\/sub: SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE/,
    );
  });
});
