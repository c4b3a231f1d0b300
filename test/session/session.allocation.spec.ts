import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { type Session, SessionService } from '../../lib/index.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

// V8's own test hook (isolate-wide flag; only this file's Function below uses the syntax).
setFlagsFromString('--allow-natives-syntax');
const inYoungGeneration = new Function('o', 'return %InYoungGeneration(o)') as (o: object) => boolean;

describe('session read allocation', () => {
  // A read's Session was built by an object literal. Once an app had held many Sessions at once (create results
  // kept, a listing), V8 pretenured that literal: every later read allocated its Session in the old generation, where
  // it kept its freshly parsed data alive through each young-generation GC (8-10 ms scavenges in the session bench
  // instead of ~1 ms, docs/session.md). Before the fix: 200 of 200 Sessions read here were born old.
  it('a Session read after 1,000 sessions were held at once is born in the young generation', async () => {
    const app = await createToolkitApp({
      target: 'single',
      keyPrefix: `rtk-alloc-${randomBytes(4).toString('hex')}:`,
      // 50 creates at a time on a busy 2-core box missed the default 1 s timeout in CI (RedisUnavailableError), and
      // once even 5 s (the whole suite ran at about half speed then); the timeout is not what this test is about
      commandTimeout: 20_000,
      session: { cookie: { secret: 's3cret' } },
    });
    const sessions = app.get(SessionService);
    const held: Session[] = [];
    for (let i = 0; i < 1_000; i += 50) {
      const chunk = Array.from({ length: 50 }, (_, j) =>
        sessions.create(`user-${(i + j) % 100}`, {
          roles: ['reader', 'writer'],
          cart: [{ sku: `SKU-${i + j}`, qty: 2 }],
          csrf: randomBytes(16).toString('hex'),
          flags: { beta: true },
        }),
      );
      held.push(...(await Promise.all(chunk)));
    }
    const ids = held.map((s) => s.id);
    held.length = 0;
    // reads from 50 callers for a while, as a server under load makes them
    const until = Date.now() + 1_000;
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        while (Date.now() < until) await sessions.get(ids[Math.floor(Math.random() * ids.length)]);
      }),
    );
    let bornOld = 0;
    for (const id of ids.slice(0, 200)) {
      const session = await sessions.get(id);
      expect(session?.id).toBe(id);
      if (!inYoungGeneration(session!)) bornOld++;
    }
    expect(bornOld).toBe(0);
  }, 90_000);
});
