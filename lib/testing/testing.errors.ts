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
 * Node's permission model (--permission) denies what the helpers need to start a server: a child process, writes
 * under their state dir (`<os.tmpdir()>/rtk-test-redis`), the network on Node 25+. The message names every missing
 * flag; until 2026-12-07 Node's own ERR_ACCESS_DENIED came from inside the start, one flag per try.
 */
export class RedisServerPermissionError extends RedisToolkitError {
  static override readonly code: string = 'E_REDIS_SERVER_PERMISSION';
}
