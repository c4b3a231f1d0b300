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
