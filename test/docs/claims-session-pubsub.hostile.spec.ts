/**
 * Adversarial review of the rule "docs and comments say what the code does today", over the reference claims of
 * docs/session.md and docs/pubsub.md: option names (both directions) and defaults, the store's options, the API's
 * return values, the gateway's option table, limits and stats, pub/sub replay and size limits. A claim that holds is
 * a plain `it`. One claim the code contradicted was pinned as `it.failing` (7bf2e09) and the code is fixed (1ad12fd):
 * with the default maxLen and maxReplay, a client away for more than maxLen messages now gets the newest ones.
 *
 * Claims already held by other tests are not repeated here:
 * - session defaults ttl 24 h, rolling, maxAgeMs 30 d, tombstoneMs 60 s, cookie name / httpOnly / sameSite / path /
 *   maxAge: test/session/session.options.spec.ts 'fills in defaults'; secret[0] / secret[1] undefined and the short
 *   secret warning: session.options.spec.ts; sameSite's message: test/foundation/options-everywhere.hostile.spec.ts;
 * - cookie attributes sent (`Path=/; Expires; HttpOnly; SameSite=Lax`, Domain, Max-Age, Secure, cleared cookie) and
 *   the guard's 401: test/session/session.http.spec.ts, session.http-hostile.spec.ts; Socket.IO / rpc contexts:
 *   session.contexts.spec.ts; several cookies of the name: session.cookie-shadowing.spec.ts;
 * - regenerate (old id dead, SessionNotFoundError), listForUser's members: session.service.spec.ts; store scanCount,
 *   unknown store options: session.connect-redis.spec.ts; store maxSize 413: session.store.spec.ts;
 * - durable replay in order and MAXLEN ~ caps: test/pubsub/pubsub.service.spec.ts; durable.ttl rounding and
 *   maxMessageBytes in UTF-8 bytes: pubsub.limits.spec.ts; too-large received messages: pubsub.receive-size.spec.ts;
 * - gateway E_LIMIT, E_RATE_LIMITED (+ retryAfterMs), E_BAD_REQUEST, `__rtk:` E_FORBIDDEN, E_DISABLED:
 *   test/pubsub/gateway.spec.ts; E_TOO_MANY_CONNECTIONS: gateway-user-sockets.spec.ts; E_FORBIDDEN_ORIGIN:
 *   gateway-revocation.spec.ts; replay exactness: gateway-replay.spec.ts; slow clients: gateway-hardening.spec.ts.
 */
import 'reflect-metadata';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import {
  InvalidKeyError,
  InvalidOptionsError,
  PubSubService,
  REDIS_CLIENT,
  RedisSessionStore,
  type RedisToolkitOptions,
  SerializationError,
  SessionService,
  SessionTooLargeError,
} from '../../lib/index.js';
import { OptionProblems } from '../../lib/common/option-checks.js';
import { NotificationsGateway } from '../../lib/notifications/index.js';
import { resolveGatewayOptions } from '../../lib/notifications/notifications.options.js';
import { resolvePubSubOptions } from '../../lib/pubsub/pubsub.options.js';
import { PUBSUB_OPTION_KEYS, SESSION_OPTION_KEYS } from '../../lib/redis-toolkit.option-keys.js';
import { resolveSessionOptions } from '../../lib/session/session.options.js';
import { SESSION_STORE_OPTION_KEYS } from '../../lib/session/session.store-options.js';
import { codeText, optionPaths, leaf } from '../support/doc-claims.js';
import { repoRoot } from '../support/doc-snippets.js';
import { closeClients, connectClient, createGatewayApp } from '../support/pubsub-gateway.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { forRootRefusal as refusal } from '../support/errors.js';

afterEach(async () => {
  closeClients();
  await closeToolkitApps();
});

const prefix = (): string => `rtk-dsp${randomBytes(4).toString('hex')}:`;
const doc = (name: string): string => readFileSync(join(repoRoot, 'docs', name), 'utf8');
const MiB = 1_048_576;

describe('option names, both directions', () => {
  const session = codeText(doc('session.md'));
  const pubsub = codeText(doc('pubsub.md'));

  // connection: docs/connections.md names each slice's (test/docs/claims.hostile.spec.ts holds that line)
  it.each(optionPaths(SESSION_OPTION_KEYS).filter((p) => p !== 'connection'))(
    'session.%s is in docs/session.md',
    (p) => {
      expect(session).toMatch(new RegExp(`\\b${leaf(p)}\\b`));
    },
  );
  it.each(Object.keys(SESSION_STORE_OPTION_KEYS))('RedisSessionStore option %s is in docs/session.md', (key) => {
    expect(session).toMatch(new RegExp(`\\b${key}\\b`));
  });
  it.each(optionPaths(PUBSUB_OPTION_KEYS).filter((p) => p !== 'connection'))('pubsub.%s is in docs/pubsub.md', (p) => {
    expect(pubsub).toMatch(new RegExp(`\\b${leaf(p)}\\b`));
  });

  it('every session option of the Configure block is accepted by forRoot', () => {
    expect(
      refusal({
        session: {
          ttl: 24 * 3_600_000,
          rolling: true,
          touchAfter: 1_000,
          maxAgeMs: 30 * 86_400_000,
          tombstoneMs: 60_000,
          maxSize: 1_048_576,
          appendUpdates: false,
          cookie: {
            name: 'rtk.sid',
            secret: ['a'.repeat(32), 'b'.repeat(32)],
            httpOnly: true,
            secure: 'auto',
            sameSite: 'lax',
            path: '/',
            domain: 'example.com',
            maxAge: 3_600_000,
          },
        },
      }),
    ).toBeUndefined();
  });

  // "secure: true | false | 'auto'"
  it.each([true, false, 'auto'])('session.cookie.secure: %p is accepted', (secure) => {
    expect(refusal({ session: { cookie: { secure: secure as boolean } } })).toBeUndefined();
  });

  it('every pubsub and pubsub.gateway option docs/pubsub.md names is accepted by forRoot', () => {
    expect(
      refusal({
        pubsub: {
          cluster: 'classic',
          durable: { maxLen: 1000, ttl: 86_400_000 },
          maxMessageBytes: MiB,
          gateway: {
            authenticate: () => null,
            authorize: () => true,
            publicChannels: ['announcements'],
            maxSubscriptionsPerSocket: 100,
            maxSocketsPerUser: 50,
            maxChannelLength: 200,
            subscribeRateLimit: { limit: 30, ttl: 10_000 },
            rateLimiter: async () => ({ allowed: true, retryAfterMs: 0 }),
            slowClient: { policy: 'disconnect', maxBufferedMessages: 1000, maxBufferedBytes: 16 * MiB },
            maxReplay: 1000,
            allowedOrigins: ['https://app.example.com'],
          },
        },
      } as Partial<RedisToolkitOptions>),
    ).toBeUndefined();
  });

  // "durable: true", "subscribeRateLimit ... false to turn off", "allowedOrigins ... '*' turns the check off",
  // "pubsub.gateway: false"
  it.each([
    ['durable: true', { durable: true }],
    ['subscribeRateLimit: false', { gateway: { subscribeRateLimit: false } }],
    ["allowedOrigins: '*'", { gateway: { allowedOrigins: '*' } }],
    ['gateway: false', { gateway: false }],
  ])('pubsub %s is accepted', (_name, pubsub) => {
    expect(refusal({ pubsub } as Partial<RedisToolkitOptions>)).toBeUndefined();
  });
});

describe('documented defaults (those session.options.spec.ts leaves out)', () => {
  const session = (raw: object = {}) => resolveSessionOptions(raw, new OptionProblems());
  const pubsub = (raw: object = {}) => resolvePubSubOptions(raw, new OptionProblems());
  const gateway = resolveGatewayOptions(undefined, new OptionProblems());

  it.each([
    // "touchAfter: 1_000, // ms (default 1 s, under a tenth of the ttl)"
    ['session.touchAfter', () => session().touchReuse, { ms: 1_000, shareOfTtl: 0.1 }],
    // "touchAfter: 0: every get extends"
    ['session.touchAfter: 0', () => session({ touchAfter: 0 }).touchReuse, undefined],
    // "maxSize: 1_048_576, // largest session in bytes"
    ['session.maxSize', () => session().maxSize, MiB],
    // "appendUpdates: false"
    ['session.appendUpdates', () => session().appendUpdates, false],
    // "On a cluster the default pubsub.cluster: 'sharded'"
    ['pubsub.cluster', () => pubsub().cluster, 'sharded'],
    // "pubsub.maxMessageBytes (default 1 MiB, 1_048_576"
    ['pubsub.maxMessageBytes', () => pubsub().maxMessageBytes, MiB],
    // durable is opt-in ("notifyUser then appends ...")
    ['pubsub.durable', () => pubsub().durable, false],
    // "{ durable: { maxLen: 1000, ttl: 86_400_000 } } // or durable: true"
    ['pubsub.durable: true', () => pubsub({ durable: true }).durable, { maxLen: 1000, ttl: 86_400_000 }],
    // the gateway's option table
    ['gateway.publicChannels', () => gateway.publicChannels, []],
    ['gateway.maxSubscriptionsPerSocket', () => gateway.maxSubscriptionsPerSocket, 100],
    ['gateway.maxSocketsPerUser', () => gateway.maxSocketsPerUser, 50],
    ['gateway.maxChannelLength', () => gateway.maxChannelLength, 200],
    ['gateway.subscribeRateLimit (30 per 10 s)', () => gateway.subscribeRateLimit, { limit: 30, ttl: 10_000 }],
    [
      'gateway.slowClient',
      () => gateway.slowClient,
      { policy: 'drop', maxBufferedMessages: 1000, maxBufferedBytes: 16 * MiB },
    ],
    ['gateway.maxReplay', () => gateway.maxReplay, 1000],
    // "allowedOrigins: same origin" (undefined: the Origin's host must be the Host)
    ['gateway.allowedOrigins', () => gateway.allowedOrigins, undefined],
    // "authenticate: session", "authorize: own + public": undefined means the built-in one
    ['gateway.authenticate / authorize', () => [gateway.authenticate, gateway.authorize], [undefined, undefined]],
  ])('%s', (_name, read, expected) => {
    expect(read()).toEqual(expected);
  });

  // "secure: ... default: NODE_ENV === 'production'"
  it.each([
    ['production', true],
    ['development', false],
    [undefined, false],
  ])('session.cookie.secure defaults to %p → %p', (env, expected) => {
    const before = process.env.NODE_ENV;
    try {
      if (env === undefined) delete process.env.NODE_ENV;
      else process.env.NODE_ENV = env;
      expect(session().cookie.secure).toBe(expected);
    } finally {
      process.env.NODE_ENV = before;
    }
  });

  // "maxSize: ... (stored JSON, ≤ 64 MiB)"
  it('session.maxSize: 64 MiB is accepted, one byte more refused', () => {
    expect(refusal({ session: { maxSize: 64 * MiB } })).toBeUndefined();
    expect(refusal({ session: { maxSize: 64 * MiB + 1 } })).toBeInstanceOf(InvalidOptionsError);
  });

  // "an integer from 1 to 512 MiB"
  it('pubsub.maxMessageBytes takes 1 to 512 MiB', () => {
    expect([1, 512 * MiB].map((n) => refusal({ pubsub: { maxMessageBytes: n } }))).toEqual([undefined, undefined]);
    for (const n of [0, 512 * MiB + 1, 1.5]) {
      expect(refusal({ pubsub: { maxMessageBytes: n } })).toBeInstanceOf(InvalidOptionsError);
    }
  });

  // "A key other than `namespace` ... stops the start"; namespace belongs to the extra, not pubsub.gateway
  it('pubsub.gateway.namespace is refused (a module-level option)', () => {
    expect(refusal({ pubsub: { gateway: { namespace: '/x' } } } as Partial<RedisToolkitOptions>)).toBeInstanceOf(
      InvalidOptionsError,
    );
  });
});

describe('RedisSessionStore defaults ("Options:" paragraph), on a real client', () => {
  it('ttl 24 h, maxAgeMs 30 d, tombstoneMs 60 s, userIdField userId, touchOnGet true, scanCount 500', async () => {
    const app = await createToolkitApp({ keyPrefix: prefix() });
    const store = new RedisSessionStore({ client: app.get<Redis>(REDIS_CLIENT) }) as unknown as Record<string, unknown>;
    expect({
      ttl: store.ttl,
      maxAgeMs: store.maxAgeMs,
      tombstoneMs: store.tombstoneMs,
      userIdField: store.userIdField,
      touchOnGet: store.touchOnGet,
      scanCount: store.scanCount,
    }).toEqual({
      ttl: 86_400_000,
      maxAgeMs: 30 * 86_400_000,
      tombstoneMs: 60_000,
      userIdField: 'userId',
      touchOnGet: true,
      scanCount: 500,
    });
  });

  // "maxSize (1 MiB; a larger set fails with SessionTooLargeError, status 413)": the default, not an explicit cap
  it('the default maxSize: a set of ~1.1 MB fails with SessionTooLargeError (413), one of ~0.9 MB is stored', async () => {
    const keyPrefix = prefix();
    const app = await createToolkitApp({ keyPrefix });
    const store = new RedisSessionStore({ client: app.get<Redis>(REDIS_CLIENT), prefix: keyPrefix });
    const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000) };
    const big = await store.set('a'.repeat(43), { cookie, blob: 'x'.repeat(1_100_000) } as never).catch((e) => e);
    expect(big).toBeInstanceOf(SessionTooLargeError);
    expect((big as { status?: number }).status).toBe(413);
    await store.set('b'.repeat(43), { cookie, blob: 'x'.repeat(900_000) } as never);
    const stored = (await store.get('b'.repeat(43))) as unknown as { blob: string };
    expect(stored.blob).toHaveLength(900_000);
  });
});

describe('SessionService API table, real Redis', () => {
  // "listForUser(userId) | Session[], oldest first"
  it('listForUser lists oldest first', async () => {
    const app = await createToolkitApp({ keyPrefix: prefix() });
    const sessions = app.get(SessionService);
    const made = [];
    for (let i = 0; i < 5; i++) made.push(await sessions.create('ann', { i }));
    const listed = await sessions.listForUser('ann');
    const created = listed.map((s) => s.createdAt);
    expect(created).toEqual([...created].sort((a, b) => a - b));
    expect(listed.map((s) => s.id).sort()).toEqual(made.map((s) => s.id).sort());
  });

  // "destroy(id) | boolean (did it exist)"; "destroyAllForUser | number destroyed"; "exists | boolean"
  it('destroy → true then false, exists, destroyAllForUser → the count', async () => {
    const app = await createToolkitApp({ keyPrefix: prefix() });
    const sessions = app.get(SessionService);
    const a = await sessions.create('bob');
    await sessions.create('bob');
    await sessions.create('bob');
    expect([await sessions.exists(a.id), await sessions.destroy(a.id), await sessions.destroy(a.id)]).toEqual([
      true,
      true,
      false,
    ]);
    expect(await sessions.exists(a.id)).toBe(false);
    expect(await sessions.destroyAllForUser('bob')).toBe(2);
    expect(await sessions.listForUser('bob')).toEqual([]);
  });

  // "Session is { id, userId, data, createdAt, lastAccessedAt, expiresAt }; times are epoch milliseconds"
  it('a Session carries exactly the documented fields', async () => {
    const app = await createToolkitApp({ keyPrefix: prefix() });
    const s = await app.get(SessionService).create('cat', { a: 1 });
    expect(Object.keys({ ...s }).sort()).toEqual(
      ['createdAt', 'data', 'expiresAt', 'id', 'lastAccessedAt', 'userId'].sort(),
    );
    expect(s.id).toMatch(/^[A-Za-z0-9_-]{43}$/); // "32 bytes ... base64url (43 characters)"
  });

  // "the default maxSize ... A create ... whose data is over the cap throws SessionTooLargeError"
  it('create over the default 1 MiB throws SessionTooLargeError', async () => {
    const app = await createToolkitApp({ keyPrefix: prefix() });
    await expect(app.get(SessionService).create('dan', { blob: 'x'.repeat(MiB + 10) })).rejects.toBeInstanceOf(
      SessionTooLargeError,
    );
  });
});

describe('PubSubService, real Redis', () => {
  // "pubsub.maxMessageBytes (default 1 MiB ...) ... counted in UTF-8 bytes of its serialized form"
  it('the default maxMessageBytes: a payload serialized to 1 MiB is published, one byte more is SerializationError', async () => {
    const app = await createToolkitApp({ keyPrefix: prefix() });
    const pubsub = app.get(PubSubService);
    // JSON of a string is the string plus its two quotes
    await expect(pubsub.publish('big', 'x'.repeat(MiB - 2))).resolves.toBe(0);
    await expect(pubsub.publish('big', 'x'.repeat(MiB - 1))).rejects.toBeInstanceOf(SerializationError);
  });

  // "publish refuses pattern characters, empty or >1 KiB names ... (InvalidKeyError)"; "a user id has at most 1019
  // bytes" (user:<id> within 1 KiB)
  it('channel names: 1024 UTF-8 bytes pass, 1025 and empty are InvalidKeyError; notifyUser ids up to 1019 bytes', async () => {
    const app = await createToolkitApp({ keyPrefix: prefix() });
    const pubsub = app.get(PubSubService);
    await expect(pubsub.publish('x'.repeat(1024), 1)).resolves.toBe(0);
    await expect(pubsub.publish('é'.repeat(512), 1)).resolves.toBe(0);
    for (const name of ['x'.repeat(1025), 'é'.repeat(513), '', 'a*', 'a?', 'a[b]', 'a\nb']) {
      await expect(pubsub.publish(name, 1)).rejects.toBeInstanceOf(InvalidKeyError);
    }
    await expect(pubsub.notifyUser('u'.repeat(1019), 1)).resolves.toBe(0);
    await expect(pubsub.notifyUser('u'.repeat(1020), 1)).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(pubsub.publish('c', undefined)).rejects.toBeInstanceOf(SerializationError);
  });

  // "replay(userId, afterId, limit?) ... at most limit messages (default 1000)"; "returns what came after lastId,
  // oldest first"
  it('replay without a limit returns the 1000 oldest after the id, oldest first', async () => {
    const app = await createToolkitApp({ keyPrefix: prefix(), pubsub: { durable: { maxLen: 5_000 } } });
    const pubsub = app.get(PubSubService);
    await Promise.all(Array.from({ length: 1_001 }, (_, i) => pubsub.notifyUser('eve', i)));
    const got = await pubsub.replay<number>('eve', '0-0');
    expect(got).toHaveLength(1_000);
    expect(got.map((m) => m.data)).toEqual(Array.from({ length: 1_000 }, (_, i) => i));
  });

  // "Anything else (1.5, Infinity, NaN, 1e20, 0) is an InvalidOptionsError before any Redis call"
  it.each([1.5, Number.POSITIVE_INFINITY, Number.NaN, 1e20, 0])('replay limit %p is InvalidOptionsError', async (n) => {
    const app = await createToolkitApp({ keyPrefix: prefix(), pubsub: { durable: true } });
    await expect(app.get(PubSubService).replay('eve', '0-0', n)).rejects.toBeInstanceOf(InvalidOptionsError);
  });

  // "the stream id is the message id"; "rtk:ps:stream:{<userId>}"; "PEXPIRE ttl"
  it('a durable notifyUser writes <prefix>ps:stream:{<userId>} with the ttl, under the message id', async () => {
    const keyPrefix = prefix();
    const app = await createToolkitApp({ keyPrefix, pubsub: { durable: { maxLen: 10, ttl: 60_000 } } });
    const pubsub = app.get(PubSubService);
    await pubsub.notifyUser('fay', { n: 1 });
    const client = app.get<Redis>(REDIS_CLIENT);
    const key = `${keyPrefix}ps:stream:{fay}`;
    const pttl = await client.pttl(key);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(60_000);
    const [[id]] = await client.xrange(key, '-', '+');
    const replayed = await pubsub.replay('fay', '0-0');
    expect(replayed.map((m) => m.id)).toEqual([id]);
  });
});

describe('NotificationsGateway, real Redis', () => {
  // "gateway.stats() → { connections, refused, relays, delivered, droppedSlow, disconnectedSlow, revoked }"
  it('stats() has exactly the documented fields', async () => {
    const app = await createGatewayApp({ keyPrefix: prefix() });
    expect(Object.keys(app.get(NotificationsGateway).stats()).sort()).toEqual(
      ['connections', 'refused', 'relays', 'delivered', 'droppedSlow', 'disconnectedSlow', 'revoked'].sort(),
    );
  });

  // "maxChannelLength | 200 | characters": 200 passes the length check (then authorize: E_FORBIDDEN), 201 does not;
  // the default authorize allows `user:<id>` and publicChannels, no patterns; the namespace defaults to /notifications
  it('default maxChannelLength 200, default authorize: own user channel and public channels only', async () => {
    const app = await createGatewayApp({ keyPrefix: prefix(), pubsub: { gateway: { publicChannels: ['news'] } } });
    const c = await connectClient(app.url, { token: 'u:42' }); // the default namespace
    expect(await c.subscribe('é'.repeat(200))).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
    expect(await c.subscribe('é'.repeat(201))).toMatchObject({ ok: false, code: 'E_BAD_REQUEST' });
    expect(await c.subscribe('user:42')).toMatchObject({ ok: true });
    expect(await c.subscribe('news')).toMatchObject({ ok: true });
    expect(await c.subscribe('user:43')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
    expect(await c.subscribe('news*')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
  });

  // "authenticate ... Throwing (e.g. Redis down) refuses with E_AUTH_UNAVAILABLE"; "→ { id, ... } or null" (null:
  // E_UNAUTHENTICATED); "authorize ... Throwing means no" (E_FORBIDDEN)
  it('a throwing authenticate is E_AUTH_UNAVAILABLE, null is E_UNAUTHENTICATED, a throwing authorize is E_FORBIDDEN', async () => {
    const app = await createGatewayApp({
      keyPrefix: prefix(),
      pubsub: {
        gateway: {
          authenticate: (h: { auth: Record<string, unknown> }) => {
            if (h.auth.token === 'boom') throw new Error('down');
            return h.auth.token === 'ok' ? { id: '7' } : null;
          },
          authorize: () => {
            throw new Error('no');
          },
        },
      },
    });
    await expect(connectClient(app.url, { token: 'boom' })).rejects.toMatchObject({
      data: { code: 'E_AUTH_UNAVAILABLE' },
    });
    await expect(connectClient(app.url, { token: 'nobody' })).rejects.toMatchObject({
      data: { code: 'E_UNAUTHENTICATED' },
    });
    const c = await connectClient(app.url, { token: 'ok' });
    expect(await c.subscribe('user:7')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
  });

  // docs/pubsub.md, Durable mode: "a client that subscribes to its user:<id> channel with lastId gets exactly the
  // messages it missed, in order, then live ones" and "a client away for more than maxLen messages gets the newest
  // ones". Fixed in 1ad12fd; before it: with the defaults (maxLen 1000, maxReplay 1000) MAXLEN ~ keeps whole stream
  // nodes (100 entries by default), so the stream held 1050 entries here, and the gateway's replay (XRANGE from lastId
  // COUNT maxReplay) sent the OLDEST 1000 of them: messages 500-1499 of 0-1549; 1500-1549, the newest, never reached
  // the client (ack { ok: true, replayed: 1000 }, no sign of the gap). Now it replays the newest maxReplay, in order,
  // and the ack says older ones were left out (skipped: true).
  it('a client away for more than maxLen messages gets the newest ones (default maxLen and maxReplay)', async () => {
    const app = await createGatewayApp({ keyPrefix: prefix(), pubsub: { durable: true } });
    const pubsub = app.get(PubSubService);
    for (let i = 0; i < 1_550; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => pubsub.notifyUser('42', i + j)));
    }
    const c = await connectClient(app.url, { token: 'u:42' });
    const ack = await c.subscribe('user:42', '0-0');
    expect(ack).toEqual({ ok: true, replayed: 1000, skipped: true });
    for (let i = 0; i < 200 && c.got.length < 1000; i++) await new Promise((r) => setTimeout(r, 5));
    // what the doc promises: the newest ones, in order, ending with the last message sent
    expect(c.got.map((m) => m.data)).toEqual(Array.from({ length: 1000 }, (_, i) => 550 + i));
  });
});
