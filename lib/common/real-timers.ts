import { FakeTimersError } from './errors.js';

/**
 * Node's own setImmediate, which fake timers (jest.useFakeTimers, vi.useFakeTimers, @sinonjs/fake-timers) do not
 * replace: they swap the global, not the `node:timers` export. The toolkit ends its turns with it (a TickBatcher's
 * flush, a TurnMemo, a timeout's verdict after the poll phase): a faked one runs only when the test advances its
 * clock, so until 2026-12-06 every call under `jest.useFakeTimers()` waited for a flush that never came.
 */
export { setImmediate } from 'node:timers';

/** What @sinonjs/fake-timers marks the functions it installs with: their clock. */
interface FakeClockMark {
  clock?: { attachedInterval?: unknown; tickMode?: { mode?: string } } | null;
}

/**
 * FakeTimersError when `process.nextTick` is faked by a clock that moves only when the test advances it: ioredis
 * starts each connection in a nextTick callback, so no connection (the start's, the pub/sub subscriber's) would ever
 * be made, and the wait for it is bounded by a timer of the same clock: a hang without a word. Jest's
 * `useFakeTimers()` fakes nextTick by default. A clock that advances by itself (`advanceTimers: true`) runs it, and
 * Jest's legacy fakes call Node's own nextTick too: both pass.
 */
export function refuseFakedNextTick(description: string): void {
  const clock = (process.nextTick as FakeClockMark).clock;
  if (clock === undefined || clock === null) return;
  if (clock.attachedInterval !== undefined || (clock.tickMode?.mode ?? 'manual') !== 'manual') return;
  throw new FakeTimersError(
    `Cannot connect to Redis at ${description}: process.nextTick is faked (jest.useFakeTimers() fakes it by ` +
      'default) and ioredis connects in a nextTick callback, which a fake clock runs only when the test advances it. ' +
      "Leave nextTick real: jest.useFakeTimers({ doNotFake: ['nextTick'] }), or let the clock advance by itself: " +
      'jest.useFakeTimers({ advanceTimers: true }); or fake timers only once the app has started and subscribed',
  );
}
