import { Cookie } from 'express-session';
import { cookieJson } from '../../lib/session/session.cookie-json.js';

// RedisSessionStore stores the cookie as cookieJson's text (a faster JSON.stringify of it): it must be the very text
// JSON.stringify writes, for express-session's Cookie and for plain objects, whatever the dates.
// express-session's Cookie takes its options (its typings declare no parameter)
const ExpressCookie = Cookie as unknown as new (options?: object) => object;

describe('cookieJson is JSON.stringify', () => {
  const same = (cookie: unknown) => expect(cookieJson(cookie)).toBe(JSON.stringify(cookie));

  it('express-session cookies and plain ones, dates of every kind', () => {
    same(new ExpressCookie({ maxAge: 86_400_000, httpOnly: true, path: '/', sameSite: 'lax', secure: true }));
    same(new ExpressCookie());
    same(null);
    same({ originalMaxAge: null, httpOnly: true, path: '/' });
    for (const ms of [0, -1, 1, 59_999, 60_000, -60_001, 253402300799999, 253402300800000, -62167219200001, 8.64e15])
      same({ expires: new Date(ms), path: '/' });
    same({ expires: new Date(Number.NaN) });
    // random times, many within one minute of the one before (the reused minute text)
    let t = Date.now();
    for (let i = 0; i < 5_000; i++) {
      t += i % 7 === 0 ? Math.floor((Math.random() - 0.5) * 2e11) : Math.floor(Math.random() * 30_000);
      same({ originalMaxAge: 1, expires: new Date(t), httpOnly: i % 2 === 0, n: undefined, f: () => 1 });
    }
  });

  it('anything else is left to JSON.stringify: nested objects, odd dates, __proto__, integer keys', () => {
    same({ nested: { a: new Date(5) }, list: [new Date(6)] });
    const odd = new Date(7);
    (odd as unknown as { toJSON: () => string }).toJSON = () => 'odd';
    same({ expires: odd });
    const proto = JSON.parse('{"__proto__": 1, "a": 2}') as object;
    same(proto);
    same({ b: 1, 2: 'x', 1: new Date(9), a: 'y' });
    same(Object.assign(Object.create(null) as object, { a: 1 }));
    same({ toJSON: () => ({ x: new Date(3) }) });
    same({ toJSON: () => 'text' });
    expect(() => cookieJson({ big: 1n })).toThrow(TypeError);
  });
});
