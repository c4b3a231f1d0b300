import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import type { Redis } from 'ioredis';
import request from 'supertest';
import { InvalidOptionsError, REDIS_CLIENT, SessionService } from '../../lib/index.js';
import { OptionProblems } from '../../lib/common/option-checks.js';
import { resolveSessionOptions } from '../../lib/session/session.options.js';
import { loginController, sessionHttpApp, userIdController } from '../support/session-http-app.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, type ToolkitApp } from '../support/toolkit-app.js';

function problemsOf(raw: unknown): string {
  const problems = new OptionProblems();
  resolveSessionOptions(raw as never, problems);
  try {
    problems.throwIfAny();
    return '';
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidOptionsError);
    return (err as Error).message;
  }
}

describe('session options', () => {
  it('fills in defaults', () => {
    const o = resolveSessionOptions(undefined, new OptionProblems());
    expect(o).toMatchObject({ ttl: 86_400_000, rolling: true, maxAgeMs: 30 * 86_400_000, tombstoneMs: 60_000 });
    expect(o.cookie).toMatchObject({
      name: 'rtk.sid',
      secrets: [],
      httpOnly: true,
      sameSite: 'lax',
      path: '/',
      maxAge: undefined,
    });
    expect(resolveSessionOptions({ cookie: { secret: 'a' } }, new OptionProblems()).cookie.secrets).toEqual(['a']);
  });

  it('names every wrong option by its path', () => {
    const message = problemsOf({
      ttl: 0,
      maxAgeMs: 'long',
      rolling: 'yes',
      tombstoneMs: -1,
      cookie: { name: 'bad name;', secret: ['', 3], secure: 'sometimes', sameSite: 'none', httpOnly: 1, maxAge: -5 },
    });
    for (const path of [
      'session.ttl',
      'session.maxAgeMs',
      'session.rolling',
      'session.tombstoneMs',
      'session.cookie.name',
      'session.cookie.secret[0]',
      'session.cookie.secret[1]',
      'session.cookie.secure',
      'session.cookie.httpOnly',
      'session.cookie.maxAge',
    ]) {
      expect(message).toContain(`  - ${path} `);
    }
    expect(problemsOf({ cookie: { sameSite: 'none', secure: false } })).toContain(
      "session.cookie.sameSite 'none' needs secure",
    );
    expect(problemsOf({ ttl: 10_000, maxAgeMs: 5_000 })).toContain(
      'session.maxAgeMs must not be shorter than session.ttl',
    );
    expect(problemsOf({ cookie: 'x' })).toContain('session.cookie must be an object');
    expect(problemsOf({ cookie: { sameSite: 'none', secure: 'auto', secret: ['a', 'b'] } })).toBe('');
  });

  // An unset environment variable in a rotation list (`[process.env.SESSION_SECRET, process.env.OLD_SESSION_SECRET]`)
  // stopped the start with "must be a non-empty string or a non-empty array of non-empty strings", naming no entry.
  it('names the bad secret entry and what to do', () => {
    const current = 'c'.repeat(32);
    const unsetOld = problemsOf({ cookie: { secret: [current, undefined] } });
    expect(unsetOld).toContain('session.cookie.secret[1] is undefined');
    expect(unsetOld).toContain('leave unset old secrets out');
    expect(unsetOld).not.toContain(current);
    const unsetCurrent = problemsOf({ cookie: { secret: [undefined, current] } });
    expect(unsetCurrent).toContain('session.cookie.secret[0] is undefined');
    expect(unsetCurrent).toContain('the first entry signs every cookie and is required');
    const several = problemsOf({ cookie: { secret: [current, '', 7] } });
    expect(several).toContain('session.cookie.secret[1] is an empty string');
    expect(several).toContain('session.cookie.secret[2] must be a string, got a number');
    expect(problemsOf({ cookie: { secret: [] } })).toContain(
      'session.cookie.secret is an empty array: give at least the current secret',
    );
    expect(problemsOf({ cookie: { secret: '' } })).toContain('session.cookie.secret is an empty string');
    expect(problemsOf({ cookie: { secret: 42 } })).toContain('session.cookie.secret must be a string or an array');
  });
});

// A cookie path or domain holding ';' was pasted into Set-Cookie as is (`path: '/x;Secure'` sent `Path=/x;Secure`, an
// attribute of the configuration's making), one holding a line break or a non-Latin-1 character made Node throw on
// every login (500), and a `__Host-`/`__Secure-` name without what its prefix needs (Secure; for __Host- also Path=/ and
// no Domain) was sent as is, which browsers drop without a word: nobody could log in. All started without a word.
describe('session cookie path, domain and name prefix', () => {
  it('a path or domain that cannot be sent as is is refused at start, naming it', () => {
    for (const path of ['/x;Secure', '/a\nb', 'relative', '/caf\u00e9\u20ac', '']) {
      expect([path, problemsOf({ cookie: { path } })]).toEqual([path, expect.stringContaining('session.cookie.path ')]);
    }
    for (const domain of ['example.com; Secure', 'a b.com', 'ex\r\nample.com', '', 'exa/mple.com']) {
      expect([domain, problemsOf({ cookie: { domain } })]).toEqual([
        domain,
        expect.stringContaining('session.cookie.domain '),
      ]);
    }
    for (const ok of [
      { path: '/' },
      { path: '/app/v1' },
      { domain: 'example.com' },
      { domain: '.sub-1.example.com' },
    ]) {
      expect(problemsOf({ cookie: ok })).toBe('');
    }
  });

  it('a __Host- or __Secure- name needs what its prefix means to browsers', () => {
    expect(problemsOf({ cookie: { name: '__Host-sid', secure: true } })).toBe('');
    expect(problemsOf({ cookie: { name: '__Host-sid', secure: 'auto' } })).toBe('');
    expect(problemsOf({ cookie: { name: '__Secure-sid', secure: true, path: '/app', domain: 'example.com' } })).toBe(
      '',
    );
    expect(problemsOf({ cookie: { name: '__Host-sid', secure: false } })).toContain(
      "session.cookie.secure must be true or 'auto' for a cookie named __Host-sid",
    );
    // the default (true only when NODE_ENV is production) is refused outside production, as browsers would refuse it
    expect(problemsOf({ cookie: { name: '__host-sid' } })).toContain('session.cookie.secure must be true or');
    expect(problemsOf({ cookie: { name: '__Secure-sid', secure: false } })).toContain(
      "session.cookie.secure must be true or 'auto' for a cookie named __Secure-sid",
    );
    expect(problemsOf({ cookie: { name: '__Host-sid', secure: true, path: '/app' } })).toContain(
      "session.cookie.path must be '/' for a cookie named __Host-sid",
    );
    expect(problemsOf({ cookie: { name: '__Host-sid', secure: true, domain: 'example.com' } })).toContain(
      'session.cookie.domain must be unset for a cookie named __Host-sid',
    );
  });
});

// A 3-character secret ('abc') started without a word. Cookies are signed with HMAC-SHA256: a secret shorter than its
// 32-byte key can be guessed offline from one signed cookie. A warning, not an error (dev setups).
describe.each(PLATFORMS)('a short cookie secret on %s', (platform) => {
  const SHORT_SECRET_ROUTES = [
    loginController({ path: 'short-secret/login', user: 'alice', answer: () => ({ ok: true }) }),
    userIdController('short-secret/me'),
  ];

  afterEach(async () => {
    jest.restoreAllMocks();
    await closeToolkitApps();
  });

  /** Boots an HTTP app with SessionMiddleware and `secret`; returns the app and the warnings naming the secret. */
  async function boot(secret: string | string[]): Promise<{ app: ToolkitApp; warnings: string[]; logged: string }> {
    const lines: string[] = [];
    for (const level of ['log', 'warn', 'error', 'debug', 'verbose'] as const) {
      jest.spyOn(Logger.prototype, level).mockImplementation((...args: unknown[]) => {
        lines.push(`${level} ${args.map(String).join(' ')}`);
      });
    }
    const { app } = await sessionHttpApp({ platform, secret, withMiddleware: SHORT_SECRET_ROUTES });
    const warnings = lines.filter((l) => l.startsWith('warn') && l.includes('session.cookie.secret'));
    return { app, warnings, logged: lines.join('\n') };
  }

  it("'abc' starts, warns once with its length and not its value, and signs cookies", async () => {
    const { app, warnings, logged } = await boot('abc');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('session.cookie.secret is 3 characters');
    expect(warnings[0]).toContain('at least 32');
    expect(logged).not.toContain('abc');
    const agent = request.agent(app.app.getHttpServer());
    await agent.post('/short-secret/login').expect(201);
    expect((await agent.get('/short-secret/me').expect(200)).body).toEqual({ userId: 'alice' });
  });

  it('a short old secret in a rotation list is named by its index, in the same single warning', async () => {
    const current = 'x'.repeat(32);
    const { warnings, logged } = await boot([current, 'old-pass', 'y'.repeat(40), 'zz']);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('session.cookie.secret[1] is 8 characters');
    expect(warnings[0]).toContain('session.cookie.secret[3] is 2 characters');
    expect(warnings[0]).not.toContain('secret[0]');
    expect(warnings[0]).not.toContain('secret[2]');
    for (const value of [current, 'old-pass', 'zz']) expect(logged).not.toContain(value);
  });

  it('a secret of 32 characters or more gives no warning', async () => {
    const { warnings } = await boot(['k'.repeat(32), 'o'.repeat(64)]);
    expect(warnings).toEqual([]);
  });
});

// Durations are any positive number of ms, but the session scripts write whole ms (PEXPIREAT, PXAT): a maxAgeMs with
// a fraction failed every create (ERR value is not an integer) and left the user's index without an expiry.
describe('session durations with a fraction of a ms', () => {
  afterEach(closeToolkitApps);

  it('create, get, update, regenerate and destroy work, and every key written has an expiry', async () => {
    const keyPrefix = `rtk-${randomUUID().slice(0, 8)}:`;
    const app = await createToolkitApp({ keyPrefix, session: { ttl: 60_000.5, maxAgeMs: 120_000.25, touchAfter: 0 } });
    const sessions = app.get(SessionService);
    const redis = app.get<Redis>(REDIS_CLIENT);
    const created = await sessions.create('alice', { n: 1 });
    expect((await sessions.get(created.id))?.data).toEqual({ n: 1 });
    expect((await sessions.update(created.id, { n: 2 })).data).toEqual({ n: 2 });
    const renewed = await sessions.regenerate(created.id);
    expect((await sessions.get(renewed.id))?.data).toEqual({ n: 2 });
    const [, keys] = await redis.scan('0', 'MATCH', `${keyPrefix}*`, 'COUNT', 1000);
    expect(keys.length).toBeGreaterThan(0);
    for (const key of keys) expect(await redis.pttl(key)).toBeGreaterThan(0);
    expect(await sessions.destroy(renewed.id)).toBe(true);
    expect(await sessions.get(renewed.id)).toBeNull();
  });
});
