import 'reflect-metadata';
import { Cluster } from 'ioredis';
import { generateSessionId, readSessionIdFromCookieHeader, signCookieValue } from '../../lib/advanced.js';
import { sessionAuthenticate } from '../../lib/notifications/notifications.session-authenticate.js';
import { countSocketWrites, masterConnectionsReady, recordCommands } from '../support/command-recorder.js';
import { loginController, sessionHttpApp, setCookieLines, userIdController } from '../support/session-http-app.js';
import { closeToolkitApps, PLATFORMS_AND_TARGETS, type Platform, type RedisTarget } from '../support/toolkit-app.js';

/**
 * Several cookies of the session's name in one Cookie header. A sibling subdomain (Domain=example.com) or a response
 * over plain HTTP can set one beside the app's own, and browsers send the one with the longer Path first: a cookie that
 * does not verify, or the signed cookie of a dead session (the attacker's own, logged out), must not hide the live
 * session, nor get the live session's cookie cleared. Several dead ones neither: the verified ids of up to 32 cookies
 * of the name are read at once (one batched Redis call), and the first live one in header order is taken.
 */
afterEach(closeToolkitApps);

const SECRET = 'shadowing-secret-of-at-least-32-characters';

/** Login ({ id }) and GET /me ({ userId }), SessionMiddleware on these two routes only. */
const SHADOW_ROUTES = [loginController({ answer: (s) => ({ id: s.id }) }), userIdController('me')];
const GuardOnlyController = userIdController('g/me');

async function shadowApp(platform: Platform, target: RedisTarget) {
  const { http, sessions, client } = await sessionHttpApp({
    target,
    platform,
    secret: SECRET,
    withMiddleware: SHADOW_ROUTES,
    middlewareOn: SHADOW_ROUTES,
    controllers: [GuardOnlyController],
  });
  const login = await http.post('/login').send({ user: 'alice' }).expect(201);
  return { http, sessions, id: login.body.id as string, client };
}

function pair(value: string): string {
  return `rtk.sid=${encodeURIComponent(value)}`;
}

describe.each(PLATFORMS_AND_TARGETS)('several session cookies in one header on %s (%s)', (platform, target) => {
  it('a cookie of the name that does not verify, sent first, does not hide the session', async () => {
    const { http, id } = await shadowApp(platform, target);
    const live = pair(signCookieValue(id, SECRET));
    const shadows = [
      'rtk.sid=garbage', // unsigned junk
      pair(generateSessionId()), // an unsigned id
      pair(signCookieValue(generateSessionId(), 'another-secret')), // signed with a secret the app does not have
      pair(`${signCookieValue(id, SECRET).slice(0, -3)}AAA`), // the victim's id with a tampered signature
      'rtk.sid=%E0%A4%A', // invalid percent-encoding
    ];
    for (const shadow of shadows) {
      const header = `${shadow}; ${live}`;
      expect(readSessionIdFromCookieHeader(header, { name: 'rtk.sid', secrets: [SECRET] })).toBe(id);
      const me = await http.get('/me').set('Cookie', header);
      expect([shadow, me.status, me.body]).toEqual([shadow, 200, { userId: 'alice' }]);
      const guardOnly = await http.get('/g/me').set('Cookie', header);
      expect([shadow, guardOnly.status, guardOnly.body]).toEqual([shadow, 200, { userId: 'alice' }]);
    }
  });

  it('the signed cookie of a dead session, sent first, neither hides the live one nor gets its cookie cleared', async () => {
    const { http, sessions, id } = await shadowApp(platform, target);
    const live = pair(signCookieValue(id, SECRET));
    // the attacker's own session, logged out: a cookie this app signed, for an id that no longer exists
    const mallory = await sessions.create('mallory');
    await sessions.destroy(mallory.id);
    const dead = pair(signCookieValue(mallory.id, SECRET));
    const never = pair(signCookieValue(generateSessionId(), SECRET)); // signed, never issued
    for (const header of [`${dead}; ${live}`, `${never}; ${dead}; ${live}`]) {
      const me = await http.get('/me').set('Cookie', header);
      expect(me.status).toBe(200);
      expect(me.body).toEqual({ userId: 'alice' });
      // the rolling refresh re-sends the live session's cookie; no Set-Cookie clears it
      const sent = setCookieLines(me.headers['set-cookie'], 'rtk.sid');
      expect(sent).toHaveLength(1);
      expect(sent[0].startsWith(`${live};`)).toBe(true);
      expect((await http.get('/g/me').set('Cookie', header)).status).toBe(200);
    }
    // with dead sessions only, it is still none, and the cookie is cleared
    const none = await http.get('/me').set('Cookie', `${dead}; ${never}`);
    expect(none.status).toBe(401);
    expect(setCookieLines(none.headers['set-cookie'])).toEqual([
      expect.stringMatching(/^rtk\.sid=; .*Expires=Thu, 01 Jan 1970/),
    ]);
    expect((await http.get('/g/me').set('Cookie', `${dead}; ${never}`)).status).toBe(401);
  });

  it('8 dead signed cookies of logged-out sessions sent first: read in one batch, the live one wins', async () => {
    const { http, sessions, id, client } = await shadowApp(platform, target);
    const live = pair(signCookieValue(id, SECRET));
    // the attacker's own sessions, logged out: cookies this app signed, for ids that no longer exist
    const dead: string[] = [];
    for (let i = 0; i < 8; i++) {
      const mallory = await sessions.create(`mallory-${i}`);
      await sessions.destroy(mallory.id);
      dead.push(pair(signCookieValue(mallory.id, SECRET)));
    }
    const header = `${dead.join('; ')}; ${live}`;
    if (client instanceof Cluster) await masterConnectionsReady(client);
    const { value, writes } = await countSocketWrites(client, () =>
      recordCommands(client, () => http.get('/me').set('Cookie', header)),
    );
    const { value: me, commands } = value;
    expect([me.status, me.body]).toEqual([200, { userId: 'alice' }]);
    // the rolling refresh re-sends the live session's cookie; no Set-Cookie clears it
    const sent = setCookieLines(me.headers['set-cookie'], 'rtk.sid');
    expect(sent).toHaveLength(1);
    expect(sent[0].startsWith(`${live};`)).toBe(true);
    // the 9 reads went out together: one script call on a single server, one pipeline per master on a cluster (one
    // after the other, they were 9 commands and 9 writes: 4 before the bound of 4, then 401)
    if (client instanceof Cluster) {
      expect(commands.filter((c) => c === 'getex')).toHaveLength(9);
      expect([...writes.values()].reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(client.nodes('master').length);
    } else {
      expect(commands).toEqual(['evalsha']);
      expect(writes.get(client.options.port ?? 0)).toBe(1);
    }
    expect((await http.get('/g/me').set('Cookie', header)).status).toBe(200);
    // the notifications gateway's default authenticate, the same way
    const authenticate = sessionAuthenticate(sessions);
    expect(await authenticate({ headers: { cookie: header } } as never)).toEqual({ id: 'alice', sessionId: id });
    expect(await authenticate({ headers: { cookie: dead.join('; ') } } as never)).toBeNull();
  });

  it('with several live sessions, the first in header order wins (not the first read to answer)', async () => {
    const { http, sessions, id } = await shadowApp(platform, target);
    const alice = pair(signCookieValue(id, SECRET));
    const bob = pair(signCookieValue((await sessions.create('bob')).id, SECRET));
    const dead = Array.from({ length: 6 }, () => pair(signCookieValue(generateSessionId(), SECRET))).join('; ');
    for (const [header, user] of [
      [`${dead}; ${alice}; ${bob}`, 'alice'],
      [`${dead}; ${bob}; ${alice}`, 'bob'],
      [`${bob}; ${dead}; ${alice}`, 'bob'],
    ]) {
      const me = await http.get('/me').set('Cookie', header);
      expect([me.status, me.body]).toEqual([200, { userId: user }]);
      expect((await http.get('/g/me').set('Cookie', header)).body).toEqual({ userId: user });
    }
  });

  it('looks at 32 cookies of the name at most (an attacker sending hundreds costs 32 HMACs and 32 reads)', async () => {
    const { http, id } = await shadowApp(platform, target);
    const live = pair(signCookieValue(id, SECRET));
    const dead = (n: number) =>
      Array.from({ length: n }, () => pair(signCookieValue(generateSessionId(), SECRET))).join('; ');
    const junk = (n: number) => Array.from({ length: n }, (_, i) => `rtk.sid=junk${i}`).join('; ');
    expect((await http.get('/me').set('Cookie', `${dead(31)}; ${live}`)).status).toBe(200);
    expect((await http.get('/g/me').set('Cookie', `${dead(31)}; ${live}`)).status).toBe(200);
    expect((await http.get('/me').set('Cookie', `${dead(20)}; ${junk(11)}; ${live}`)).status).toBe(200);
    expect((await http.get('/me').set('Cookie', `${dead(32)}; ${live}`)).status).toBe(401);
    expect((await http.get('/g/me').set('Cookie', `${dead(32)}; ${live}`)).status).toBe(401);
    expect((await http.get('/me').set('Cookie', `${junk(32)}; ${live}`)).status).toBe(401);
    // the same id several times is read once
    const oneDead = pair(signCookieValue(generateSessionId(), SECRET));
    const repeated = `${oneDead}; ${oneDead}; ${oneDead}; ${oneDead}; ${live}`;
    expect((await http.get('/me').set('Cookie', repeated)).status).toBe(200);
  });
});
