import type { RedisToolkitOptions } from '../../lib/index.js';
import { resolveToolkitOptions } from '../../lib/redis-toolkit.options-resolver.js';

/** The error `run` throws (synchronously or as a rejection), or undefined: for asserting on its class and message. */
export async function errorOf(run: () => unknown): Promise<unknown> {
  try {
    await run();
    return undefined;
  } catch (err) {
    return err;
  }
}

/**
 * The error resolving forRoot options throws (InvalidOptionsError expected), or undefined when they are accepted: a
 * connection URL is added (no server is reached).
 */
export function forRootRefusal(options: Partial<RedisToolkitOptions>): unknown;
/** The same for options of a wrong shape (the hostile specs). */
export function forRootRefusal(options: object): unknown;
export function forRootRefusal(options: object): unknown {
  try {
    resolveToolkitOptions({ connection: { url: 'redis://127.0.0.1:1' }, ...options } as RedisToolkitOptions);
    return undefined;
  } catch (err) {
    return err;
  }
}
