/**
 * Security checks of the session feature, through the public API and HTTP (supertest on a small Nest app):
 * session fixation, tampered cookies and malformed ids. Redis commands are counted with `INFO commandstats` on a
 * private server, so "no Redis command" is measured, not assumed.
 *
 * The gateway checks are in features.gateway.spec.ts; rate limiting, pattern invalidation and hostile keys from
 * requests in features.http.spec.ts.
 */
import 'reflect-metadata';
import { Controller, Get, Post, Req, Res, UseGuards } from '@nestjs/common';
import { Redis } from 'ioredis';
import {
  CurrentSession,
  SessionGuard,
  SessionNotFoundError,
  SessionService,
  type Session,
  type CookieResponse,
  type SessionRequest,
} from '../../lib/index.js';
import { generateSessionId, signCookieValue } from '../../lib/advanced.js';
import { commandCalls, sumCalls } from '../support/commandstats.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { cookiePair, loginController, sessionHttpApp, userIdController } from '../support/session-http-app.js';
import { closeToolkitApps } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const SECRET = 'sec-features-secret';
const OTHER_SECRET = 'attacker-secret';

@Controller()
class LoginController {
  constructor(private readonly sessions: SessionService) {}

  /** Login that keeps the session but moves it to a new id (regenerate), then records the user. */
  @Post('login/regenerate')
  async loginRegenerate(
    @CurrentSession() current: Session | null,
    @Req() req: SessionRequest,
    @Res({ passthrough: true }) res: CookieResponse,
  ) {
    const base = current ?? (await this.sessions.create('anonymous'));
    const moved = await this.sessions.regenerate(base.id);
    const session = await this.sessions.update(moved.id, { user: 'alice', stage: 'logged-in' });
    this.sessions.writeCookie(res, session, req);
    return { id: session.id };
  }

  @Get('me')
  @UseGuards(SessionGuard)
  me(@CurrentSession() session: Session) {
    return { id: session.id, userId: session.userId, data: session.data };
  }
}

const LOGIN_ROUTES = [
  // A pre-login (anonymous) session, as a site gives a visitor before login: what an attacker plants.
  loginController({ path: 'visit', user: 'anonymous', data: { stage: 'visitor' }, answer: (s) => ({ id: s.id }) }),
  // Login as docs/session.md shows it: destroy the current session, create a new one.
  loginController({
    path: 'login/recreate',
    user: 'alice',
    data: { user: 'alice', stage: 'logged-in' },
    replaceCurrent: true,
    answer: (s) => ({ id: s.id }),
  }),
  LoginController,
];

/** Only the guard (no middleware): the guard reads the cookie itself. */
const GuardOnlyController = userIdController('guard-only/me');

/** The `rtk.sid=…` pair of the response's session cookie (not one that clears it). */
const cookieOf = (setCookie: unknown): string => cookiePair(setCookie, { live: true });

function loginApp(target: 'single' | { url: string } = 'single') {
  return sessionHttpApp({ target, secret: SECRET, withMiddleware: LOGIN_ROUTES, controllers: [GuardOnlyController] });
}

/** Total calls of every command but INFO on a server (INFO is how we count). */
async function commandCount(admin: Redis): Promise<number> {
  return sumCalls(await commandCalls(admin), (c) => c !== 'info');
}

async function privateServer(): Promise<{ server: RedisServerHandle; admin: Redis }> {
  const server = trackForCleanup(await startRedisServer());
  const admin = trackForCleanup(new Redis(server.url));
  return { server, admin };
}

describe('session fixation', () => {
  it.each(['regenerate', 'recreate'] as const)(
    'login (%s) issues a new id; the planted pre-login id is dead (get → null, 401)',
    async (flow) => {
      const { http, sessions } = await loginApp();
      // The attacker gets a pre-login session and plants its cookie in the victim's browser.
      const visit = await http.post('/visit').expect(201);
      const planted = cookieOf(visit.headers['set-cookie']);
      const plantedId = visit.body.id as string;
      expect(sessions.idFromCookieHeader(planted)).toBe(plantedId);
      expect((await http.get('/me').set('Cookie', planted).expect(200)).body.data).toEqual({ stage: 'visitor' });

      // The victim logs in with the planted cookie.
      const login = await http.post(`/login/${flow}`).set('Cookie', planted).expect(201);
      const fresh = cookieOf(login.headers['set-cookie']);
      const freshId = login.body.id as string;
      expect(freshId).not.toBe(plantedId);
      expect(sessions.idFromCookieHeader(fresh)).toBe(freshId);
      expect(fresh).not.toBe(planted);

      // The victim's new cookie is logged in...
      const me = await http.get('/me').set('Cookie', fresh).expect(200);
      expect(me.body).toMatchObject({ id: freshId, data: { user: 'alice', stage: 'logged-in' } });
      // ...and the attacker's copy of the old id is worth nothing: not in Redis, 401 through the middleware+guard and
      // through the guard alone, and it cannot be written back to life.
      expect(await sessions.get(plantedId)).toBeNull();
      const refused = await http.get('/me').set('Cookie', planted).expect(401);
      expect(refused.body.message).toBe('A valid session is required');
      await http.get('/guard-only/me').set('Cookie', planted).expect(401);
      await expect(sessions.update(plantedId, { user: 'mallory' })).rejects.toBeInstanceOf(SessionNotFoundError);
      expect(await sessions.get(plantedId)).toBeNull();
      if (flow === 'regenerate')
        await expect(sessions.regenerate(plantedId)).rejects.toBeInstanceOf(SessionNotFoundError);
      // the victim is unaffected by those attempts
      expect((await http.get('/me').set('Cookie', fresh).expect(200)).body.data.user).toBe('alice');
    },
  );

  it('two logins from the same planted cookie race: at most one regenerate wins, the old id is dead either way', async () => {
    const { http, sessions } = await loginApp();
    const visit = await http.post('/visit').expect(201);
    const plantedId = visit.body.id as string;
    const results = await Promise.allSettled([sessions.regenerate(plantedId), sessions.regenerate(plantedId)]);
    const won = results.filter((r): r is PromiseFulfilledResult<Session> => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    expect(lost[0].reason).toBeInstanceOf(SessionNotFoundError);
    expect(await sessions.get(plantedId)).toBeNull();
    expect(await sessions.get(won[0].value.id)).not.toBeNull();
    expect((await sessions.listForUser('anonymous')).map((s) => s.id)).toContain(won[0].value.id);
    expect((await sessions.listForUser('anonymous')).map((s) => s.id)).not.toContain(plantedId);
  });
});

describe('tampered session cookies', () => {
  it('a changed id, a changed signature, an unsigned id or another secret → 401 and no Redis command', async () => {
    const { server, admin } = await privateServer();
    const { http, sessions } = await loginApp({ url: server.url });
    const victim = await sessions.create('victim', { role: 'admin' });
    const signed = signCookieValue(victim.id, SECRET); // s:<id>.<sig>
    const sig = signed.slice(signed.lastIndexOf('.') + 1);
    const flip = (s: string, i: number): string => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
    const otherId = generateSessionId();
    const tampered: [string, string][] = [
      ['id changed in its first character', `s:${flip(victim.id, 0)}.${sig}`],
      ['id changed in its last character', `s:${flip(victim.id, 42)}.${sig}`],
      ["another id with the victim's signature", `s:${otherId}.${sig}`],
      ['signature changed', `s:${victim.id}.${flip(sig, 5)}`],
      ['signature truncated', `s:${victim.id}.${sig.slice(0, -1)}`],
      ['signature extended', `s:${victim.id}.${sig}A`],
      ['signature removed', `s:${victim.id}.`],
      ['unsigned id', victim.id],
      ['unsigned id with the s: prefix', `s:${victim.id}`],
      ['signed with another secret', signCookieValue(victim.id, OTHER_SECRET)],
      ['signed with an empty secret', signCookieValue(victim.id, '')],
      [
        'signature of the id under another secret',
        `s:${victim.id}.${signCookieValue(victim.id, OTHER_SECRET).split('.').pop()}`,
      ],
    ];
    // the genuine cookie works (and costs Redis commands), so the counter below is able to move
    const genuineBefore = await commandCount(admin);
    expect(
      (
        await http
          .get('/me')
          .set('Cookie', `rtk.sid=${encodeURIComponent(signed)}`)
          .expect(200)
      ).body.userId,
    ).toBe('victim');
    expect(await commandCount(admin)).toBeGreaterThan(genuineBefore);

    const before = await commandCount(admin);
    for (const [what, value] of tampered) {
      for (const encoded of [encodeURIComponent(value), value]) {
        const res = await http.get('/me').set('Cookie', `rtk.sid=${encoded}`);
        expect({ what, status: res.status }).toEqual({ what, status: 401 });
        expect(res.body.message).toBe('A valid session is required');
        expect(JSON.stringify(res.body)).not.toContain(victim.id);
        const guardOnly = await http.get('/guard-only/me').set('Cookie', `rtk.sid=${encoded}`);
        expect({ what, status: guardOnly.status }).toEqual({ what, status: 401 });
      }
    }
    expect(await commandCount(admin)).toBe(before);
    // the victim's session is untouched
    expect((await sessions.get(victim.id))!.data).toEqual({ role: 'admin' });
  });

  it('a validly signed cookie carrying a malformed id → 401 and no Redis command', async () => {
    const { server, admin } = await privateServer();
    const { http } = await loginApp({ url: server.url });
    const before = await commandCount(admin);
    for (const id of [
      '*',
      '../',
      '../../etc/passwd',
      'a'.repeat(42),
      'a'.repeat(44),
      `{${'a'.repeat(41)}}`,
      'é'.repeat(43),
      `${'a'.repeat(42)}=`,
      'x'.repeat(4_000),
    ]) {
      const res = await http.get('/me').set('Cookie', `rtk.sid=${encodeURIComponent(signCookieValue(id, SECRET))}`);
      expect({ id: id.slice(0, 50), status: res.status }).toEqual({ id: id.slice(0, 50), status: 401 });
    }
    expect(await commandCount(admin)).toBe(before);
  });
});

describe('malformed session ids', () => {
  const MALFORMED: [string, unknown][] = [
    ['empty', ''],
    ['42 characters', 'a'.repeat(42)],
    ['44 characters', 'a'.repeat(44)],
    ['a generated id plus one character', `${generateSessionId()}A`],
    ['a generated id minus one character', generateSessionId().slice(1)],
    ['base64 "+"', `${'a'.repeat(42)}+`],
    ['base64 "/"', `${'a'.repeat(42)}/`],
    ['padding "="', `${'a'.repeat(42)}=`],
    ['a dot', `${'a'.repeat(42)}.`],
    ['a space', `${'a'.repeat(42)} `],
    ['"*"', '*'],
    ['43 × "*"', '*'.repeat(43)],
    ['"../"', '../'],
    ['path traversal, 43 characters', `../../${'a'.repeat(37)}`],
    ['braces (hash tag), 43 characters', `{${'a'.repeat(41)}}`],
    ['unicode, 43 characters', 'é'.repeat(43)],
    ['emoji', '😀'.repeat(21) + 'a'],
    ['full-width letters', 'ａ'.repeat(43)],
    ['NUL bytes', '\u0000'.repeat(43)],
    ['CRLF', `${'a'.repeat(41)}\r\n`],
    ['10 KB', 'A'.repeat(10 * 1024)],
    ['10 KB of a valid id repeated', generateSessionId().repeat(239)],
    ['a number', 42],
    ['null', null],
    ['an object', { id: 'x' }],
  ];

  it(`get → null for ${MALFORMED.length} malformed ids, with no Redis command`, async () => {
    const { server, admin } = await privateServer();
    const { sessions } = await loginApp({ url: server.url });
    const real = await sessions.create('u'); // scripts loaded, connection warm
    expect(await sessions.get(real.id)).not.toBeNull();
    const before = await commandCount(admin);
    for (const [what, id] of MALFORMED) {
      expect({ what, got: await sessions.get(id) }).toEqual({ what, got: null });
      expect({ what, destroyed: await sessions.destroy(id) }).toEqual({ what, destroyed: false });
    }
    expect(await commandCount(admin)).toBe(before);
    // a well-formed unknown id does reach Redis (the counter can move) and is null too
    expect(await sessions.get(generateSessionId())).toBeNull();
    expect(await commandCount(admin)).toBeGreaterThan(before);
    // nothing was created for any of them: the only session key is the real one
    const keys = (await admin.keys('*')).filter((k) => k.includes(':sess:{'));
    expect(keys).toEqual([expect.stringContaining(real.id)]);
  });
});
