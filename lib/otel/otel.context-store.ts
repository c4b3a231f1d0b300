import type { AsyncLocalStorage } from 'node:async_hooks';
import { Logger } from '@nestjs/common';
import { type Context, type ContextManager, context } from '@opentelemetry/api';

/** `attach` of OpenTelemetry's AsyncLocalStorageContextManager (context-async-hooks 2.x, experimental there). */
interface AttachingContextManager extends ContextManager {
  attach?(ctx: Context): { dispose?(): void; [Symbol.dispose]?(): void };
}

const logger = new Logger('RedisToolkitInstrumentation');
const NO_SCOPE: Disposable = { [Symbol.dispose]: () => undefined };
let warned = false;
/** Managers without attach() already looked at: the probe runs once per manager, not on every traced call. */
const probed = new WeakSet<ContextManager>();

/**
 * The store bound to `tracing:rtk:…:start`: it makes a traced call's span OpenTelemetry's active context while the
 * call runs, so the spans of its Redis commands nest under it. diagnostics_channel enters a bound store with
 * `run(ctx, fn)` up to Node 24, and with `withScope(ctx)` (a Disposable, as AsyncLocalStorage has since Node 25.9)
 * from Node 26 on: a store without it makes every traced call throw a TypeError there. OpenTelemetry's API has no
 * scope to enter, only `context.with(ctx, fn)`, so `withScope` uses the global context manager's `attach`.
 */
export function otelContextStore(): AsyncLocalStorage<Context> {
  const store = {
    run: <R>(ctx: Context, fn: (...args: unknown[]) => R, ...args: unknown[]): R =>
      context.with(ctx, fn, undefined, ...args),
    withScope: (ctx: Context): Disposable => attach(ctx),
  };
  return store as unknown as AsyncLocalStorage<Context>;
}

function attach(ctx: Context): Disposable {
  // `_getContextManager` is private in @opentelemetry/api's typings; it returns the registered manager, else the no-op
  const manager = (context as unknown as { _getContextManager?(): AttachingContextManager })._getContextManager?.();
  if (typeof manager?.attach === 'function') {
    const token = manager.attach(ctx);
    return { [Symbol.dispose]: () => (token.dispose ? token.dispose() : token[Symbol.dispose]?.()) };
  }
  if (!warned && manager !== undefined && !probed.has(manager)) {
    probed.add(manager);
    if (carriesContext(manager)) {
      warned = true;
      logger.warn(
        'the registered OpenTelemetry context manager has no attach() (the AsyncLocalStorageContextManager of ' +
          '@opentelemetry/context-async-hooks 2.x has it), and on this Node diagnostics_channel can make a span ' +
          "the active context only through it: the toolkit's spans are recorded, but the spans of their Redis " +
          'commands are not their children. Register a context manager that has attach() (docs/observability.md, ' +
          '"Spans")',
      );
    }
  }
  return NO_SCOPE;
}

/** Whether `manager` keeps a context at all (the no-op one of an app without the SDK does not: nothing is lost). */
function carriesContext(manager: ContextManager): boolean {
  const probe = context.active().setValue(Symbol('rtk probe'), true);
  return manager.with(probe, () => manager.active() === probe);
}
