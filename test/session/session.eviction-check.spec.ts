/**
 * Under an evicting maxmemory-policy Redis may evict a user's session index (touched only at login and logout, so LRU
 * and LFU pick it first; every session key has a TTL, so `volatile-*` too): "log out everywhere" (destroyAllForUser)
 * then leaves the unindexed sessions logged in, without an error. The first create / destroyAllForUser of a
 * SessionService reads the policy of every master once (INFO memory, as the cache and the rate limiter do) and warns.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { RedisConnection } from '../../lib/advanced.js';
import { SessionService } from '../../lib/index.js';
import { recordCommands } from '../support/command-recorder.js';
import { setEvictionPolicy } from '../support/eviction-policy.js';
import { usePrivateRedis } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const evictionWarnings = (warnings: string[]): string[] => warnings.filter((w) => /^sessions: .*evict/.test(w));

describe('sessions on a server that may evict their keys', () => {
  const redis = usePrivateRedis();
  const configure = (maxmemory: string, maxmemoryPolicy: string) =>
    setEvictionPolicy(redis.server.port, maxmemory, maxmemoryPolicy);

  async function boot() {
    const log = recordingLogger();
    const app = await createToolkitApp({
      target: { url: redis.server.url },
      keyPrefix: `rtk-se${randomBytes(4).toString('hex')}:`,
      session: {},
      logger: log.logger,
    });
    return { log, sessions: app.get(SessionService), client: app.get(RedisConnection).client };
  }

  /** Two logins and a "log out everywhere"; the INFO commands sent meanwhile and just after. */
  async function loginsAndLogout(sessions: SessionService, client: RedisConnection['client']): Promise<number> {
    const { commands } = await recordCommands(client, async () => {
      await sessions.create('ann', { n: 1 });
      await sessions.create('ann', { n: 2 });
      expect(await sessions.destroyAllForUser('ann')).toBe(2);
      await sleep(300);
    });
    return commands.filter((c) => c === 'info').length;
  }

  it.each(['allkeys-lru', 'volatile-lru'])('%s with maxmemory 100mb: one warning naming the policy', async (p) => {
    await configure('100mb', p);
    const { log, sessions, client } = await boot();
    expect(evictionWarnings(log.warnings)).toEqual([]); // nothing at start: only a process that writes sessions asks
    const { commands } = await recordCommands(client, async () => {
      expect(await sessions.get(randomBytes(32).toString('base64url'))).toBeNull();
      await sleep(100);
    });
    expect(commands.filter((c) => c === 'info')).toEqual([]); // a read alone does not ask
    expect(await loginsAndLogout(sessions, client)).toBe(1);
    expect(await waitFor(() => evictionWarnings(log.warnings).length > 0, 2_000)).toBe(true);
    await sessions.create('bob');
    await sleep(200);
    const warnings = evictionWarnings(log.warnings);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`maxmemory-policy ${p}`);
    expect(warnings[0]).toContain(`127.0.0.1:${redis.server.port}`);
    expect(warnings[0]).toContain('destroyAllForUser');
    expect(warnings[0]).toContain('noeviction');
    expect(log.errors).toEqual([]);
  });

  it.each([
    ['100mb', 'noeviction'],
    ['0', 'allkeys-lru'],
  ])('maxmemory %s, %s: no warning (the check ran once)', async (maxmemory, p) => {
    await configure(maxmemory, p);
    const { log, sessions, client } = await boot();
    expect(await loginsAndLogout(sessions, client)).toBe(1);
    expect(log.warnings.filter((w) => /^sessions/.test(w))).toEqual([]);
  });
});
