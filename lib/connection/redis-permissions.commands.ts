/**
 * What each feature sends, as the ACL check asks it of Redis (the commands, their sample arguments, a script's), and
 * how a refusal names them.
 */

import { RedisPermissionError, RedisReplyError } from '../common/errors.js';
import { FEATURES, type Feature, KeyBuilder } from '../common/keys.js';
import { LUA_SOURCES, type LuaPath } from '../common/lua-sources.generated.js';
import type { ConnectionFeature } from './connection.validation.js';
import type { PermissionReport } from './redis-permissions.js';
import { trackingCommandName, trackingCommands, trackingRule } from './redis-permissions.tracking.js';

/** The scripts of lib/`folder` (not of its subfolders), in the order of their names. */
function scriptsOf(folder: string): LuaPath[] {
  return (Object.keys(LUA_SOURCES) as LuaPath[])
    .filter((path) => path.startsWith(`${folder}/`) && !path.includes('/', folder.length + 1))
    .sort();
}

/** One command a feature sends, with representative arguments (keys and channels under the prefix). */
export interface RequiredCommand {
  feature: string;
  /** The command and its arguments, e.g. `['time']` or `['get', 'rtk:cache:{acl-check}']`. */
  args: string[];
  /** Where it is sent from, e.g. `consume.lua` (a command inside a script). */
  from?: string;
  /** Sent only for pattern subscriptions (PSUBSCRIBE, PUNSUBSCRIBE): a denial is a warning, not a refusal. */
  patterns?: true;
}

/** Feature → its folder (for its scripts), its key feature name, the commands it sends itself. */
export const FEATURE_COMMANDS: {
  name: string;
  /** Its options slice in forRoot (where its `connection` name is); none for health. */
  option?: ConnectionFeature;
  folder: string;
  key: Feature | '';
  commands: string[];
  /** Scripts of lib/common it runs too (by their path under lib/). */
  shared?: LuaPath[];
  /** What its L1 sends besides (the cache's invalidation bus, cache.l1.ts): only with `cache.l1`. */
  withL1?: string[];
  /** Sent only with `pubsub.durable` (notifyUser's streams and their replay); asked where it is not known. */
  durable?: string[];
  /** Its (UN)SUBSCRIBE and PUBLISH stay classic with `pubsub.cluster: 'sharded'` (not through PubSubService). */
  classicPubSub?: true;
  /** What its pattern subscriptions send (classic pub/sub only): checked, a denial warned of (patternWarning). */
  patterns?: string[];
}[] = [
  { name: 'health', folder: '', key: '', commands: ['ping', 'info'] },
  {
    name: 'cache',
    option: 'cache',
    folder: 'cache',
    key: FEATURES.cache,
    commands: ['get', 'mget', 'set', 'unlink', 'scan', 'zrangebyscore', 'zrem'],
    // the stampede lock's release (cache.load-lock.ts): GET and DEL; the reads under a server's reply limit
    // (get-batcher.ts): STRLEN and GET
    shared: ['common/release-lock.lua', 'common/budget-get.lua'],
    withL1: ['publish', 'subscribe'],
  },
  {
    name: 'rate limit',
    option: 'rateLimit',
    folder: 'rate-limit',
    key: FEATURES.rateLimit,
    commands: ['unlink', 'scan', 'set'],
  },
  {
    name: 'session',
    option: 'session',
    folder: 'session',
    key: FEATURES.session,
    commands: [
      'get',
      'getex',
      'del',
      'exists',
      'pexpireat',
      'pexpiretime',
      'multi',
      'exec',
      'zrandmember',
      'zrangebyscore',
      'zrem',
      'unlink',
      'scan',
    ],
  },
  {
    name: 'lock',
    option: 'lock',
    folder: 'lock',
    key: FEATURES.lock,
    commands: ['zcount', 'zrem', 'subscribe'],
    shared: ['common/release-lock.lua'],
    // the wake-on-release subscriber (lock.wake.ts) and the release scripts' PUBLISH
    classicPubSub: true,
  },
  {
    name: 'pub/sub',
    option: 'pubsub',
    folder: 'pubsub',
    key: FEATURES.pubsub,
    commands: ['publish', 'subscribe', 'unsubscribe'],
    durable: ['xadd', 'xrange', 'xrevrange', 'pexpire', 'multi', 'exec'],
    // Checked, but a denial only warns: an app without patterns needs neither, and no pattern is known before
    // `subscribe('x:*')` (the ACL checks each literally: one sample says nothing of another). A refused pattern is a
    // typed error to the caller, or, refused after a reconnect, dropped and logged (lib/pubsub/pubsub.refusals.ts).
    patterns: ['psubscribe', 'punsubscribe'],
  },
];

/**
 * The cache's `l1.invalidation` where it has an L1 (`auto` may fall back to the bus, so it needs the bus's commands
 * too); none without an L1, whose cache neither publishes nor subscribes.
 */
export type CacheL1Check = 'auto' | 'bus' | 'tracking';

/** Arguments that satisfy each command's arity: `K` is a key, `C` a channel. */
const SAMPLE_ARGS: Record<string, string[]> = {
  get: ['K'],
  getrange: ['K', '0', '1'],
  strlen: ['K'],
  append: ['K', 'v'],
  mget: ['K'],
  set: ['K', 'v'],
  getex: ['K'],
  del: ['K'],
  unlink: ['K'],
  exists: ['K'],
  pttl: ['K'],
  pexpire: ['K', '1'],
  pexpireat: ['K', '1'],
  pexpiretime: ['K'],
  incr: ['K'],
  incrby: ['K', '1'],
  zadd: ['K', '1', 'm'],
  zcard: ['K'],
  zcount: ['K', '0', '1'],
  zscore: ['K', 'm'],
  zrange: ['K', '0', '1'],
  zremrangebyscore: ['K', '0', '1'],
  zrangebyscore: ['K', '0', '1'],
  zrem: ['K', 'm'],
  zpopmin: ['K'],
  zmscore: ['K', 'm'],
  zrandmember: ['K'],
  hget: ['K', 'f'],
  hset: ['K', 'f', 'v'],
  hdel: ['K', 'f'],
  sadd: ['K', 'm'],
  srem: ['K', 'm'],
  smembers: ['K'],
  xadd: ['K', '*', 'f', 'v'],
  xrange: ['K', '-', '+'],
  xrevrange: ['K', '+', '-'],
  publish: ['C', 'm'],
  spublish: ['C', 'm'],
  subscribe: ['C'],
  ssubscribe: ['C'],
  unsubscribe: ['C'],
  sunsubscribe: ['C'],
  scan: ['0'],
  time: [],
  ping: [],
  info: [],
  multi: [],
  exec: [],
};

/**
 * What a feature's pattern subscriptions send, on the prefix's own pattern (`rtk:*`): Redis compares a pattern
 * literally with the user's channel rules, and `&rtk:*` grants this one, so under that rule a denial is the command's.
 */
export const patternSamples = (f: (typeof FEATURE_COMMANDS)[number], keyPrefix: string): RequiredCommand[] =>
  (f.patterns ?? []).map((c) => ({ feature: f.name, args: [c, `${keyPrefix}*`], patterns: true }));

/** The commands inside a Lua file (`redis.call('GET', ...)` / `redis.pcall(...)`), lower case. */
export function scriptCommands(lua: string): string[] {
  return [...new Set([...lua.matchAll(/redis\.p?call\(\s*'([A-Za-z]+)'/g)].map((m) => m[1].toLowerCase()))];
}

export function sample(command: string, key: string, channel: string): string[] {
  const args = SAMPLE_ARGS[command] ?? ['K'];
  return [command, ...args.map((a) => (a === 'K' ? key : a === 'C' ? channel : a))];
}

/** `rate limit: TIME (in consume-token-bucket.lua), INFO` — one line per feature. */
export function describeDenied(denied: RequiredCommand[]): string {
  const byFeature = new Map<string, string[]>();
  for (const c of denied) {
    const command =
      trackingCommandName(c.args) ?? (c.args[0] === 'cluster' ? 'CLUSTER SLOTS' : c.args[0].toUpperCase());
    const what = `${command}${c.from ? ` (in ${c.from})` : ''}`;
    byFeature.set(c.feature, [...(byFeature.get(c.feature) ?? []), what]);
  }
  return [...byFeature].map(([feature, list]) => `${feature}: ${list.join(', ')}`).join('; ');
}

/** ACL rules that grant the denied commands (`+time +info +@scripting`). */
function remedy(denied: RequiredCommand[], keyPrefix: string): string {
  const rules = new Set<string>();
  for (const c of denied) {
    const cmd = c.args[0];
    const tracking = trackingRule(c.args);
    if (tracking) rules.add(tracking);
    else if (cmd === 'eval' || cmd === 'evalsha') rules.add('+@scripting');
    else if (cmd === 'cluster') rules.add('+cluster|slots');
    else rules.add(`+${cmd}`);
  }
  return `ACL SETUSER <user> ${[...rules].join(' ')} ~${keyPrefix}* &${keyPrefix}*`;
}

/**
 * Throws what `report` found: RedisPermissionError naming each denied command and the ACL rules that grant them, or,
 * when the server only lacks commands (renamed or disabled with rename-command, which no ACL rule fixes),
 * RedisReplyError naming those. Warns of the commands the probe could not check.
 */
export function throwIfDenied(
  whole: PermissionReport,
  keyPrefix: string,
  where: string,
  warn: (message: string) => void,
): void {
  const patterns = [...whole.denied, ...(whole.unknown ?? [])].filter((c) => c.patterns);
  if (patterns.length > 0) warn(patternWarning(patterns, keyPrefix, where));
  const report = {
    ...whole,
    denied: whole.denied.filter((c) => !c.patterns),
    unknown: whole.unknown?.filter((c) => !c.patterns),
  };
  if (report.unchecked && report.unchecked.length > 0) {
    warn(
      `Redis ACL permissions${where} checked by running each command (Redis < 7 has no ACL DRYRUN); not checked, ` +
        `as no script may run them: ${describeDenied(report.unchecked)}`,
    );
  }
  const unknown = report.unknown ?? [];
  if (report.denied.length === 0 && unknown.length === 0) return;
  const unchecked =
    report.method === 'scripting-denied' ? ' (the other commands could not be checked without scripting)' : '';
  const renamed =
    unknown.length === 0
      ? ''
      : `${describeDenied(unknown)}${report.denied.length === 0 ? unchecked : ''}. The server does not know them: ` +
        'they are renamed or disabled with rename-command in its configuration, and the toolkit sends them by these ' +
        'names (no ACL rule helps); remove those rename-command lines';
  if (report.denied.length === 0) {
    throw new RedisReplyError(`The Redis server${where} lacks commands the toolkit needs: ${renamed}.`, 'ERR');
  }
  const denied = describeDenied(report.denied);
  throw new RedisPermissionError(
    `The Redis ACL user${where} may not run commands the toolkit needs: ${denied}${unchecked}. ` +
      `Grant them, e.g. \`${remedy(report.denied, keyPrefix)}\` (docs/security.md has the complete line).` +
      (renamed ? ` Also missing: ${renamed}.` : ''),
    'NOPERM',
  );
}

/**
 * PSUBSCRIBE / PUNSUBSCRIBE denied (or unknown to the server) on the prefix's own pattern: every pattern subscription
 * will be refused. Not a refusal of the start: an app that subscribes to no pattern needs neither.
 */
function patternWarning(denied: RequiredCommand[], keyPrefix: string, where: string): string {
  const names = [...new Set(denied.map((c) => c.args[0].toUpperCase()))];
  return (
    `Redis ACL user${where} cannot run ${names.join(' or ')} on the pattern "${keyPrefix}*" (the command is not ` +
    `granted, or no channel rule grants that pattern: Redis compares a pattern literally, and \`&${keyPrefix}*\` or ` +
    "allchannels grants this one): pub/sub pattern subscriptions (pubsub.subscribe('news:*'), a gateway client's " +
    'pattern) will fail with RedisPermissionError; channel subscriptions are unaffected. If the app subscribes to ' +
    'patterns, grant `+psubscribe +punsubscribe` (in +@pubsub) and each pattern under the pub/sub prefix literally ' +
    `(\`&${keyPrefix}${FEATURES.pubsub}:news:*\`) or allchannels; docs/security.md.`
  );
}

/** What PubSubService sends as SPUBLISH, SSUBSCRIBE, SUNSUBSCRIBE with sharded pub/sub on a cluster. */
const SHARDED_FORMS = new Set(['publish', 'subscribe', 'unsubscribe']);

/**
 * Every command the toolkit sends for its features, with a key and a channel under `keyPrefix`: the commands each
 * feature sends itself, EVALSHA and EVAL (scripts), and every command inside each feature's scripts (TIME included).
 */
export function requiredCommands(
  keyPrefix: string,
  options: {
    cluster: boolean;
    sharded: boolean;
    features?: ConnectionFeature[];
    cacheL1?: CacheL1Check;
    /** `pubsub.durable` is set; not given: its stream commands are asked as if it were. */
    pubsubDurable?: boolean;
  },
): RequiredCommand[] {
  const keys = new KeyBuilder(keyPrefix);
  // An internal channel: the probe (Redis < 7) publishes on it, and no client ever subscribes to one.
  const channel = keys.channel(KeyBuilder.internalChannel('acl', 'check'));
  const out: RequiredCommand[] = [];
  for (const f of FEATURE_COMMANDS) {
    // Health runs on every connection; a feature only on the connection it is configured to use.
    if (options.features && f.option && !options.features.includes(f.option)) continue;
    // Health sends no key (PING, INFO): any key under the prefix does for its sample. `{acl:check}`: no caller's
    // key can equal it (a caller's `:` is always escaped), so the probe of Redis < 7 never touches one.
    const key = keys.taggedTrusted(f.key || FEATURES.cache, 'acl:check');
    const sent = [
      ...f.commands,
      ...((options.cacheL1 && f.withL1) || []),
      ...((options.pubsubDurable !== false && f.durable) || []),
    ];
    for (const c of sent) {
      const command = options.sharded && !f.classicPubSub && SHARDED_FORMS.has(c) ? `s${c}` : c;
      out.push({ feature: f.name, args: sample(command, key, channel) });
    }
    if (!options.sharded) out.push(...patternSamples(f, keyPrefix)); // sharded pub/sub has no patterns
    if (f.withL1 && options.cacheL1 === 'tracking') out.push(...trackingCommands(f.name, keys.featurePrefix(f.key)));
    if (!f.folder) continue;
    // the scripts of its folder (lib/<folder>/*.lua, as lua-sources.generated.ts holds them: nothing is read from
    // disk), then the shared ones
    const scripts = [...scriptsOf(f.folder), ...(f.shared ?? [])];
    if (scripts.length === 0) continue;
    out.push({ feature: f.name, args: ['evalsha', '0'.repeat(40), '1', key] });
    out.push({ feature: f.name, args: ['eval', 'return 0', '1', key] });
    const seen = new Set<string>();
    for (const file of scripts) {
      for (const c of scriptCommands(LUA_SOURCES[file])) {
        if (seen.has(c)) continue;
        seen.add(c);
        out.push({ feature: f.name, args: sample(c, key, channel), from: file.slice(file.lastIndexOf('/') + 1) });
      }
    }
  }
  if (options.cluster) out.push({ feature: 'cluster', args: ['cluster', 'slots'] });
  return out;
}
