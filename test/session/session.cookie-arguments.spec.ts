/**
 * The session cookie helpers with arguments that are not what they take (arguments-everywhere-2.hostile holds the
 * first cases): a typed error that names the argument (never the id), no Set-Cookie written, never a TypeError nor an
 * `Expires=Invalid Date` header; unsignCookieValue answers null for what is not a string.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { InvalidKeyError, InvalidOptionsError, SessionService } from '../../lib/index.js';
import { generateSessionId, signCookieValue, unsignCookieValue } from '../../lib/advanced.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

const SECRET = 'session-cookie-arguments-secret-0123456789';
const any = (v: unknown) => v as never;

function recordingResponse() {
  const headers: Record<string, unknown> = {};
  return {
    headers,
    getHeader: (n: string) => headers[n.toLowerCase()],
    setHeader: (n: string, v: unknown) => void (headers[n.toLowerCase()] = v),
  };
}

/** A reply of Fastify's shape (no setHeader; its Node response as `raw`). */
function fastifyShapedReply() {
  const raw = recordingResponse();
  const own: Record<string, unknown> = {};
  return {
    raw: { ...raw, removeHeader: (n: string) => void delete raw.headers[n.toLowerCase()] },
    own,
    getHeader: (n: string) => own[n.toLowerCase()] ?? raw.headers[n.toLowerCase()],
    header: (n: string, v: unknown) => void (own[n.toLowerCase()] = v),
    removeHeader: (n: string) => void delete own[n.toLowerCase()],
  };
}

let sessions: SessionService;
let withMaxAge: SessionService;
beforeAll(async () => {
  const keyPrefix = `rtk-sca${randomBytes(4).toString('hex')}:`;
  sessions = (await createToolkitApp({ keyPrefix, session: { cookie: { secret: SECRET } } })).get(SessionService);
  withMaxAge = (await createToolkitApp({ keyPrefix, session: { cookie: { secret: SECRET, maxAge: 60_000 } } })).get(
    SessionService,
  );
});
afterAll(() => closeToolkitApps());

describe('signedCookieValue / writeCookie: the id', () => {
  const id = generateSessionId();
  it.each([
    ['a 42-character id', id.slice(1)],
    ['a 44-character id', `${id}a`],
    ['an id with a dot', `${id.slice(1)}.`],
    ['a String object', new String(id)],
  ])('%s: InvalidKeyError, whose message does not hold the value', (_l, v) => {
    let thrown: unknown;
    try {
      sessions.signedCookieValue(any(v));
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(InvalidKeyError);
    expect((thrown as Error).message).toMatch(/^session cookie: the id to sign must be a session id, got /);
    expect((thrown as Error).message).not.toContain(id.slice(1, 20));
    const r = recordingResponse();
    expect(() => sessions.writeCookie(any(r), any({ id: v, expiresAt: Date.now() + 60_000 }))).toThrow(InvalidKeyError);
    expect(r.headers['set-cookie']).toBeUndefined();
  });

  it.each([
    ['undefined', undefined],
    ['null', null],
    ['a string', 'abc'],
  ])('writeCookie(res, %s): InvalidOptionsError naming the session, no cookie', (_l, v) => {
    // before: TypeError "Cannot read properties of undefined (reading 'expiresAt')" (a string: InvalidOptionsError on
    // its expiresAt, which named the wrong thing)
    const r = recordingResponse();
    expect(() => sessions.writeCookie(any(r), any(v))).toThrow(
      /^writeCookie\(res, session\): session must be a Session/,
    );
    expect(r.headers['set-cookie']).toBeUndefined();
  });

  it('a session id: signed as before (cookie-signature format), and it verifies', () => {
    expect(sessions.signedCookieValue(id)).toBe(signCookieValue(id, SECRET));
    expect(unsignCookieValue(sessions.signedCookieValue(id), [SECRET])).toBe(id);
  });
});

describe('writeCookie: expiresAt', () => {
  it.each([
    ['undefined', undefined],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['-Infinity', Number.NEGATIVE_INFINITY],
    ['1e20 (past the Date range)', 1e20],
    ["a date string '2030-01-01'", '2030-01-01'],
    ['a Date', new Date(Date.now() + 60_000)],
    ['null', null],
  ])('%s: InvalidOptionsError naming expiresAt, no Set-Cookie', (_l, v) => {
    for (const service of [sessions, withMaxAge]) {
      const r = recordingResponse();
      expect(() => service.writeCookie(any(r), any({ id: generateSessionId(), expiresAt: v }))).toThrow(
        InvalidOptionsError,
      );
      expect(() => service.writeCookie(any(r), any({ id: generateSessionId(), expiresAt: v }))).toThrow(/expiresAt/);
      expect(r.headers['set-cookie']).toBeUndefined();
    }
  });

  it('NaN with cookie.maxAge set (where expiresAt is not written): refused too', () => {
    const r = recordingResponse();
    expect(() => withMaxAge.writeCookie(any(r), { id: generateSessionId(), expiresAt: Number.NaN })).toThrow(
      /expiresAt must be a time in epoch milliseconds \(a finite number\), got NaN/,
    );
    expect(r.headers['set-cookie']).toBeUndefined();
  });

  it('a finite expiresAt: its Expires, as before (0 is the epoch)', () => {
    const at = Date.UTC(2030, 0, 1);
    const r = recordingResponse();
    sessions.writeCookie(any(r), { id: generateSessionId(), expiresAt: at });
    expect(String(r.headers['set-cookie'])).toContain(`; Expires=${new Date(at).toUTCString()};`);
    sessions.clearCookie(any(r));
    expect(String(r.headers['set-cookie'])).toContain('; Expires=Thu, 01 Jan 1970 00:00:00 GMT;');
  });
});

describe('writeCookie / clearCookie: the response', () => {
  const none = (): undefined => undefined;
  it.each<[string, unknown]>([
    ['a number', 42],
    ['an array', []],
    ['setHeader without getHeader', { setHeader: none }],
    ['getHeader without setHeader', { getHeader: none }],
    ['a reply without raw', { getHeader: none, header: none, removeHeader: none }],
    ['a reply whose raw is not a response', { raw: {}, getHeader: none, header: none, removeHeader: none }],
  ])('%s: InvalidOptionsError naming res', (_l, r) => {
    const id = generateSessionId();
    expect(() => sessions.clearCookie(any(r))).toThrow(InvalidOptionsError);
    expect(() => sessions.clearCookie(any(r))).toThrow(/the response \(res\) must be/);
    expect(() => sessions.writeCookie(any(r), { id, expiresAt: Date.now() + 60_000 })).toThrow(/response \(res\)/);
  });

  it('a Node/Express response and a Fastify-shaped reply: written as before', () => {
    const id = generateSessionId();
    const node = recordingResponse();
    sessions.writeCookie(any(node), { id, expiresAt: Date.now() + 60_000 });
    expect(node.headers['set-cookie']).toHaveLength(1);
    const reply = fastifyShapedReply();
    reply.raw.setHeader('Set-Cookie', ['other=1']);
    sessions.writeCookie(any(reply), { id, expiresAt: Date.now() + 60_000 });
    const own = reply.own['set-cookie'] as string[];
    expect(own).toHaveLength(2);
    expect(own[0]).toBe('other=1');
    expect(own[1]).toMatch(/^rtk\.sid=s%3A/);
  });
});

describe('unsignCookieValue: what is not a string', () => {
  it.each([
    ['a Symbol', Symbol('s:x')],
    ['a function', () => 's:x'],
    ['a String object of a signed value', new String(signCookieValue('abc', SECRET))],
    ['an object with startsWith', { startsWith: () => true, slice: () => 'abc.x' }],
  ])('%s: null', (_l, v) => {
    expect(unsignCookieValue(any(v), [SECRET])).toBeNull();
  });
});
