import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { PubSubService } from '../../lib/index.js';
import type { MessageHandler } from '../../lib/advanced.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';
import { recordingLogger } from '../support/recording-logger.js';

afterEach(closeToolkitApps);

// Type level (npm run lint compiles the tests with tsc): handlers that return something besides void or a Promise
// compile. Before: TS2322 'number' is not assignable to 'void | Promise<void>'.
const counting: MessageHandler<number> = (n) => n + 1;
const chained: MessageHandler = (payload) => Promise.resolve(payload).then(() => 'done');
// biome-ignore lint/suspicious/noThenProperty: a thenable on purpose (a PromiseLike that is not a Promise)
const thenable: MessageHandler = () => ({ then: (ok: (v: number) => void) => ok(1) });
void [counting, chained, thenable];

describe.each(['single', 'cluster'] as const)('handlers that return values, on %s', (target) => {
  it('one-line handlers (`() => got++`, a push) run; a returned value is ignored', async () => {
    const keyPrefix = `hr${randomBytes(4).toString('hex')}:`;
    const { errors, logger } = recordingLogger();
    const pubsub = (await createToolkitApp({ target, keyPrefix, logger })).get(PubSubService);
    let got = 0;
    const pushed: number[] = [];
    await pubsub.subscribe('count', () => got++);
    await pubsub.subscribe<number>('count', (n) => pushed.push(n));
    await pubsub.publish('count', 7);
    await pubsub.publish('count', 8);
    expect(await waitFor(() => got === 2 && pushed.length === 2, 3_000)).toBe(true);
    expect(pushed).toEqual([7, 8]);
    expect(errors).toEqual([]);
  });

  it('a returned rejected promise, or a rejected thenable without catch, is logged; the others still run', async () => {
    const keyPrefix = `hr${randomBytes(4).toString('hex')}:`;
    const { errors, logger } = recordingLogger();
    const pubsub = (await createToolkitApp({ target, keyPrefix, logger })).get(PubSubService);
    let ok = 0;
    await pubsub.subscribe('rej', () => Promise.reject(new Error('async boom')));
    // A PromiseLike has only `then`: before, its rejection went unseen (dispatch looked for `catch`).
    await pubsub.subscribe('rej', () => ({
      // biome-ignore lint/suspicious/noThenProperty: a thenable on purpose
      then: (_ok: unknown, fail: (err: Error) => void) => fail(new Error('thenable boom')),
    }));
    await pubsub.subscribe('rej', () => ok++);
    await pubsub.publish('rej', 1);
    expect(await waitFor(() => ok === 1 && errors.length === 2, 3_000)).toBe(true);
    await sleep(100);
    expect(errors.sort()).toEqual(['a handler of rej threw: async boom', 'a handler of rej threw: thenable boom']);
  });
});
