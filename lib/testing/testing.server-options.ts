/** What startRedisServer takes, and its check before anything starts (testing.redis-server.ts). */
import { OptionProblems, refuseUnknown, shownValue } from '../common/option-checks.js';

export interface RedisServerOptions {
  /** Fixed port (e.g. to re-create a server); default: a free loopback port. 6379 is refused. */
  port?: number;
  /**
   * Extra `redis-server` arguments, appended after the harness defaults (so they win). `port`, `bind`, `daemonize`,
   * `dir` and `include` are refused (InvalidOptionsError): the harness owns them (a loopback port, never 6379, a temp
   * dir it removes and knows the server by, a process it can reap).
   */
  args?: string[];
  /** `requirepass` for the default user. */
  password?: string;
  /** An extra ACL user with full permissions; the handle's `url` then carries these credentials. */
  aclUser?: { name: string; password: string };
  /** Start as a cluster node (`cluster-enabled yes`); the bus port is `port + 10000`. */
  cluster?: boolean;
}

const SERVER_OPTIONS = new Set(['port', 'args', 'password', 'aclUser', 'cluster']);
/**
 * Directives `args` may not set (redis-server reads them case-insensitively, the last one winning): `port` (6379, or
 * a port the handle does not know), `bind` (off loopback), `daemonize` (the server forks away from the process the
 * harness reaps: the one started exits, the daemon lives on untracked), `dir` (files left on disk, and a crashed run's
 * server never swept: the sweep knows a server by its dir), `include` (a config file setting any of these).
 */
const HARNESS_DIRECTIVES: Record<string, string> = {
  port: 'the port is the `port` option (a free loopback port by default, never 6379)',
  bind: 'a test server listens on 127.0.0.1 only',
  daemonize: 'a daemon leaves the process the harness stops and reaps',
  dir: 'the server runs in a temp dir of its own, removed at exit and used to find it after a crash',
  include: 'a config file may set port, bind, daemonize or dir',
};
const ACL_USER_OPTIONS = new Set(['name', 'password']);

/**
 * InvalidOptionsError for a key startRedisServer does not know (a `passwrod` started a server without a password)
 * and for a value of the wrong type, before anything starts. Passwords are never shown.
 */
export function checkServerOptions(opts: RedisServerOptions): void {
  const problems = new OptionProblems('startRedisServer');
  if (!problems.object('options', opts)) problems.throwIfAny();
  refuseUnknown(opts, SERVER_OPTIONS, 'startRedisServer');
  problems.integer('port', opts.port, 1, 65_535);
  const { args, aclUser } = opts;
  if (args !== undefined && !(Array.isArray(args) && args.every((a) => typeof a === 'string')))
    problems.add(
      'args',
      `must be an array of strings, got ${Array.isArray(args) ? 'an array of other values' : shownValue(args)}`,
    );
  else if (args !== undefined) {
    for (const arg of args) {
      // redis-server reads '--port 6379' given as one argument as the same directive ('--port', '6379')
      const directive = arg.startsWith('--') ? arg.slice(2).trimStart().split(/\s/, 1)[0].toLowerCase() : '';
      const why = Object.hasOwn(HARNESS_DIRECTIVES, directive) ? HARNESS_DIRECTIVES[directive] : undefined;
      if (why !== undefined) problems.add('args', `must not set ${directive} (${arg}): ${why}`);
    }
  }
  problems.string('password', opts.password, { secret: true });
  if (problems.object('aclUser', aclUser) && aclUser !== undefined) {
    refuseUnknown(aclUser, ACL_USER_OPTIONS, 'startRedisServer: aclUser');
    problems.string('aclUser.name', aclUser.name ?? null);
    problems.string('aclUser.password', aclUser.password ?? null, { secret: true });
  }
  problems.boolean('cluster', opts.cluster);
  problems.throwIfAny();
}
