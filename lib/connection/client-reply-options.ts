import { Cluster, type ClusterOptions, type Redis, type RedisOptions } from 'ioredis';
import { DEFAULT_KEY_PREFIX } from '../common/keys.js';
import type { OptionProblems } from '../common/option-checks.js';

/**
 * The ioredis options that change the keys the toolkit's commands reach or the shape of the replies it reads, so that
 * features break without an error (each seen in test/foundation/connection.hostile.spec.ts):
 * - `keyPrefix`: ioredis prefixes the keys of its own commands (GET, SET, UNLINK) but not those of the toolkit's
 *   scripts nor SCAN patterns, so a feature splits its keys between `app:rtk:...` and `rtk:...` (invalidatePattern
 *   and invalidateTags found nothing and the entries were still served; a session just created read back as null).
 * - `stringNumbers`: every integer reply a string (every rate-limit consume denied; lock acquire, a delivered publish
 *   and a semaphore failing; sessions.create "random source broken?").
 * - `replyMapping: 'resp3'`: map replies as objects and doubles as numbers where the toolkit reads RESP2 shapes, and
 *   the cache L1's tracking connection (a RESP2 duplicate of the client) cannot be opened at all.
 * The url query already refuses them (`?keyPrefix=`); here for a `{ client }` and a `{ cluster }`'s clusterOptions.
 */
interface ReplyShaping {
  keyPrefix?: unknown;
  stringNumbers?: unknown;
  replyMapping?: unknown;
}

/** Why each option set in `options` breaks the features, by option name. */
function problemsOf(options: ReplyShaping | undefined): [string, string][] {
  const found: [string, string][] = [];
  const theirs = options?.keyPrefix;
  if (typeof theirs === 'string' && theirs !== '')
    found.push([
      'keyPrefix',
      `${JSON.stringify(theirs)}: ioredis adds it to the keys of its own commands but not to those of the ` +
        "toolkit's Lua scripts or SCAN patterns, so each feature would split its keys and miss its own (invalidation " +
        'finding nothing, a session just created read back as null). Give the toolkit a client without it (one of ' +
        `its own, or { url }) and the prefix as its keyPrefix option (e.g. keyPrefix: ` +
        `${JSON.stringify(theirs.concat(DEFAULT_KEY_PREFIX))})`,
    ]);
  if (options?.stringNumbers === true)
    found.push([
      'stringNumbers',
      'true: every integer reply would arrive as a string where the features read numbers (every rate-limit ' +
        'consume denied, lock acquire and publish failing). Give the toolkit a client without it',
    ]);
  if (options?.replyMapping === 'resp3')
    found.push([
      'replyMapping',
      '"resp3": map replies would arrive as objects and doubles as numbers where the toolkit reads RESP2 shapes, ' +
        "and the cache L1's tracking connection (RESP2) cannot be opened from it. Give the toolkit a client with " +
        'the default ("legacy")',
    ]);
  return found;
}

/** A `{ client }` created with keyPrefix, stringNumbers or replyMapping 'resp3' (a Cluster: either options). */
export function checkClientReplyOptions(path: string, client: Redis | Cluster, problems: OptionProblems): void {
  const options: ReplyShaping[] =
    client instanceof Cluster ? [client.options, client.options.redisOptions ?? {}] : [client.options];
  const seen = new Set<string>();
  for (const [name, why] of options.flatMap(problemsOf)) {
    if (seen.has(name)) continue; // a Cluster copies redisOptions.keyPrefix to its own keyPrefix
    seen.add(name);
    problems.add(`${path}.client`, `was created with ${name} ${why}`);
  }
}

/** `clusterOptions` (and its redisOptions) of a `{ cluster }`: passed to ioredis as given, so checked alike. */
export function checkClusterReplyOptions(path: string, clusterOptions: unknown, problems: OptionProblems): void {
  if (clusterOptions === null || typeof clusterOptions !== 'object') return;
  const { redisOptions } = clusterOptions as ClusterOptions;
  for (const [name, why] of problemsOf(clusterOptions as ReplyShaping))
    problems.add(`${path}.clusterOptions.${name}`, `is refused: ${why}`);
  if (redisOptions !== null && typeof redisOptions === 'object')
    for (const [name, why] of problemsOf(redisOptions as RedisOptions & ReplyShaping))
      problems.add(`${path}.clusterOptions.redisOptions.${name}`, `is refused: ${why}`);
}
