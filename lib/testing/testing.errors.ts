import { RedisToolkitError } from '../common/errors.js';

/** The install line for redis-server (which brings redis-cli), for every error that lacks one of them. */
export const INSTALL_HINT = 'apt-get install -y redis-server (Debian/Ubuntu), brew install redis (macOS)';

/** `redis-server` (or `redis-cli`, for a cluster) is not on PATH: a test cannot start its Redis. */
export class RedisServerNotFoundError extends RedisToolkitError {
  static override readonly code: string = 'E_REDIS_SERVER_NOT_FOUND';
}

/**
 * The `redis-server` on PATH is older than the toolkit needs (7.0: PEXPIRETIME for sessions, sharded pub/sub on a
 * cluster): without this check the server would start and a test fail later on an unknown command.
 */
export class RedisServerTooOldError extends RedisToolkitError {
  static override readonly code: string = 'E_REDIS_SERVER_TOO_OLD';
}

/**
 * A test Redis did not start: a server that exited at once (its log's tail in the message: a bad `args` directive, a
 * port taken on each try), one that did not answer PING in time, no free loopback port, or a cluster that did not
 * form. Before 2026-12-06 these were plain Errors, told apart from a test's own failures only by their text.
 */
export class RedisServerStartError extends RedisToolkitError {
  static override readonly code: string = 'E_REDIS_SERVER_START';
}

/**
 * A server handle was asked for what its state does not allow: `restart()` while the server runs, `pause()`,
 * `resume()` or `flush()` once it is stopped. A mistake in the test's own steps, told apart from a server that failed
 * (RedisServerStartError) by its code; plain Errors before 2026-12-06.
 */
export class RedisServerStateError extends RedisToolkitError {
  static override readonly code: string = 'E_REDIS_SERVER_STATE';
}

/**
 * Node's permission model (--permission) or Deno's denies what the helpers need to start a server: a child process
 * (redis-server; redis-cli for a cluster), writes under their state dir (`<os.tmpdir()>/rtk-test-redis`), the network
 * (Node 25+, Deno), or reading the PATH dir that holds redis-server; or what sweepStaleServers needs (the state dir,
 * and on Deno the signals). The message names every missing flag; until 2026-12-07 the runtime's own refusal came
 * from inside the start, one flag per try (on Deno without the network, uncaught), an unreadable PATH dir read as
 * "redis-server not found", and on Deno without --allow-run the sweep removed live runs' servers' state.
 */
export class RedisServerPermissionError extends RedisToolkitError {
  static override readonly code: string = 'E_REDIS_SERVER_PERMISSION';
}
