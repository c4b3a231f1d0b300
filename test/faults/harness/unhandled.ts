/**
 * Counts unhandled promise rejections on the real Node process.
 *
 * Under jest a test file sees a copy of `process`; listeners added to it never fire. The Function constructor of
 * the outer realm (any core-module function's `.constructor`) gives the real process, as test/support/redis-server.ts
 * does for its exit hook. Outside jest this is simply `process`.
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
