/**
 * Counts unhandled promise rejections on the real Node process.
 *
 * Under jest a test file sees a copy of `process`; `process.on('unhandledRejection', ...)` in a spec never fires, so
 * a check built on it cannot fail. The Function constructor of the outer realm (any core-module function's
 * `.constructor`) gives the real process, as netns.ts and open-handles.ts do. Outside jest this is simply `process`.
 *
 * Jest 30 also listens on the real process and fails the test in whose async context the rejected promise was made
 * (every test of the describe when it was made in a beforeAll, the whole file when made outside any test); the counter
 * says at a chosen point, by name, that nothing in the window between start and check was left unhandled.
 *
 *   const rejections = countUnhandledRejections();
 *   ... the cases that could leave a rejection ...
 *   await settleRejections();
 *   expect(rejections.reasons).toEqual([]);   // the count is reasons.length; a failure lists each reason
 *   rejections.stop();
 */
import { spawn } from 'node:child_process';

function hostProcess(): NodeJS.Process {
  try {
    const OuterFunction = spawn.constructor as FunctionConstructor;
    return (OuterFunction('return globalThis')() as typeof globalThis).process;
  } catch {
    return process;
  }
}

export interface RejectionCounter {
  readonly count: number;
  /** One line per rejection, in order: `Name: message` for an Error, else `String(reason)`. */
  readonly reasons: string[];
  /** Removes the listener. */
  stop(): void;
}

/** Starts counting `unhandledRejection` events of the whole process (any realm). */
export function countUnhandledRejections(): RejectionCounter {
  const proc = hostProcess();
  const reasons: string[] = [];
  const onRejection = (reason: unknown): void => {
    reasons.push(reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason));
  };
  proc.on('unhandledRejection', onRejection);
  return {
    get count() {
      return reasons.length;
    },
    reasons,
    stop: () => proc.off('unhandledRejection', onRejection),
  };
}

/** Lets pending rejections surface: Node reports them after the microtask queue drains, so give it a few turns. */
export async function settleRejections(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setTimeout(resolve, 20));
}

/**
 * countUnhandledRejections() for a whole spec file: starts in a beforeAll and stops in an afterAll it registers, so a
 * file does not repeat that set-up. Read it inside cases only (before the beforeAll it counts nothing).
 */
export function countUnhandledRejectionsInFile(): RejectionCounter {
  let counter: RejectionCounter | undefined;
  beforeAll(() => {
    counter = countUnhandledRejections();
  });
  afterAll(() => counter?.stop());
  return {
    get count() {
      return counter?.count ?? 0;
    },
    get reasons() {
      return counter?.reasons ?? [];
    },
    stop: () => counter?.stop(),
  };
}
