/**
 * `RTK_OPEN_HANDLES=1`: which test file left a handle or a timer that keeps the process alive.
 *  - Handles: before and after each file (per-file-setup.ts) every active handle of the real process not seen yet is
 *    noted with the file it appeared in (or after); the global teardown prints those still open when the run is over.
 *  - Timers: setTimeout/setInterval of the file's sandbox are wrapped to remember where each timer was made; 5 s
 *    after the file ends, the ones still pending and ref'd are printed with that stack.
 * Run jest without --forceExit to see whether the process then exits.
 */
import { spawn } from 'node:child_process';

const KEY = Symbol.for('rtk-test.open-handles');

interface HostHandles {
  seen: WeakMap<object, string>;
  previous: string;
}

function host(): typeof globalThis & { [KEY]?: HostHandles } {
  return (spawn.constructor as FunctionConstructor)('return globalThis')() as typeof globalThis;
}

export const trackingHandles = process.env.RTK_OPEN_HANDLES === '1';

/** Notes the handles not seen before as appearing `where`. */
export function noteHandles(where: (previous: string) => string, file?: string): void {
  const h = host();
  const state = (h[KEY] ??= { seen: new WeakMap(), previous: '(start)' });
  const label = where(state.previous);
  const handles = (h.process as unknown as { _getActiveHandles(): object[] })._getActiveHandles();
  for (const handle of handles) if (!state.seen.has(handle)) state.seen.set(handle, label);
  if (file !== undefined) state.previous = file;
}

type Timer = NodeJS.Timeout & { _destroyed?: boolean };

/** Wraps this sandbox's setTimeout/setInterval; returns the report to call when the file is done. */
export function trackTimers(file: string): () => void {
  const made = new Map<Timer, string>();
  const g = globalThis as unknown as Record<'setTimeout' | 'setInterval', (...args: unknown[]) => Timer>;
  // node:timers too (engine.io's sockets take their ping timers from it): the host's module object, patched once
  const timers = host().process.getBuiltinModule?.('node:timers') as typeof g | undefined;
  for (const [target, name] of [
    [g, 'setTimeout'],
    [g, 'setInterval'],
    ...(timers ? ([[timers, 'setTimeout']] as const) : []),
  ] as const) {
    const original = target[name];
    target[name] = Object.assign((...args: unknown[]) => {
      const timer = original(...args);
      if (made.size < 100_000)
        made.set(
          timer,
          `${name}(${String(args[1] ?? 0)} ms)${new Error().stack?.split('\n').slice(2, 8).join('\n') ?? ''}`,
        );
      return timer;
    }, original);
  }
  return () => {
    const hostTimeout = host().setTimeout;
    hostTimeout(() => {
      const left = [...made].filter(([t]) => t._destroyed !== true && t.hasRef());
      if (left.length > 0)
        host().process.stderr.write(
          `\nOPEN TIMERS left by ${file} (5 s after it ended):\n${left.map(([, where]) => `  ${where}`).join('\n')}\n`,
        );
    }, 5_000).unref();
  };
}
