import { Cluster, type Redis } from 'ioredis';
import { nearest, type OptionProblems, type OptionShape, timerProblem } from '../common/option-checks.js';
import { MAX_TIMER_MS } from '../common/timeout.js';
import { CONNECTION_OPTION_KEYS } from '../redis-toolkit.option-keys.js';
import { checkClientReplyOptions, checkClusterReplyOptions } from './client-reply-options.js';
import { redirectionsWithin } from './cluster-redirections.js';
import { DEFAULT_CONNECTION_NAME, type RedisNamedConnections, type RedisNodeAddress } from './connection.options.js';

/** The highest db index `db` or a url path may name (a server has `databases` of them, 16 by default). */
const MAX_DB = 15_999;

/** The features that run on a connection of their own choosing (`cache: { connection: 'volatile' }`). */
export const CONNECTION_FEATURES = ['cache', 'rateLimit', 'session', 'lock', 'pubsub'] as const;
export type ConnectionFeature = (typeof CONNECTION_FEATURES)[number];

/**
 * Checks `connection` (path `connection`) or one entry of `connections` (path `connections.<name>`): exactly one
 * target, and a missing url is an error, never a silent 127.0.0.1:6379.
 */
export function checkConnection(path: string, connection: unknown, problems: OptionProblems): void {
  if (connection === undefined) {
    problems.add(path, 'is required: { url } or { host, port }, { sentinels, name }, { cluster } or { client }');
    return;
  }
  if (typeof connection === 'string') {
    // `connection: process.env.REDIS_URL`: the string may hold a password, so it is not shown.
    problems.add(path, 'must be an object such as { url }, got a string');
    return;
  }
  if (!problems.object(path, connection)) return;
  const c = connection as Record<string, unknown>;
  const kinds = [
    c.url !== undefined || c.host !== undefined || c.port !== undefined ? 'url/host/port' : undefined,
    c.sentinels !== undefined ? 'sentinels' : undefined,
    c.cluster !== undefined ? 'cluster' : undefined,
    c.client !== undefined ? 'client' : undefined,
  ].filter((k): k is string => k !== undefined);
  if (kinds.length === 0) {
    // `{ url: process.env.UNSET }` or `{}` would otherwise connect to 127.0.0.1:6379 without a word.
    problems.add(path, 'names no server: give url (it is undefined here), host/port, sentinels, cluster or client');
    return;
  }
  if (kinds.length > 1) {
    problems.add(
      path,
      `must give only one of url/host/port, sentinels, cluster or client (got ${kinds.join(' and ')})`,
    );
    return;
  }
  checkOptionsOfKind(path, c, kinds[0], problems);
  if (c.url !== undefined) {
    if (c.host !== undefined || c.port !== undefined) problems.add(path, 'give either url or host/port, not both');
    const fromUrl = checkUrl(`${path}.url`, c.url, problems);
    if (fromUrl) checkUrlAgainstOptions(path, fromUrl, c, problems);
  }
  problems.string(`${path}.host`, c.host);
  problems.integer(`${path}.port`, c.port, 1, 65_535);
  problems.integer(`${path}.db`, c.db, 0, MAX_DB);
  problems.duration(`${path}.readOnlyGraceMs`, c.readOnlyGraceMs, { allowZero: true });
  problems.string(`${path}.username`, c.username);
  problems.string(`${path}.sentinelUsername`, c.sentinelUsername);
  problems.string(`${path}.password`, c.password, { allowEmpty: true, secret: true });
  problems.string(`${path}.sentinelPassword`, c.sentinelPassword, { allowEmpty: true, secret: true });
  if (c.tls !== undefined && typeof c.tls !== 'boolean') problems.object(`${path}.tls`, c.tls);
  if (c.tls === false && typeof c.url === 'string' && /^rediss:/i.test(c.url))
    problems.add(`${path}.tls`, 'is false but the url is rediss:// (TLS): remove one of them');
  if (c.sentinelTls !== undefined && typeof c.sentinelTls !== 'boolean')
    problems.object(`${path}.sentinelTls`, c.sentinelTls);
  if (c.sentinels !== undefined) {
    checkNodes(`${path}.sentinels`, c.sentinels, problems);
    problems.string(`${path}.name`, c.name);
    if (c.name === undefined) problems.add(`${path}.name`, 'is required with sentinels (the master group name)');
  }
  if (c.cluster !== undefined) {
    checkNodes(`${path}.cluster`, c.cluster, problems);
    checkClusterReplyOptions(path, c.clusterOptions, problems);
  }
  if (c.client !== undefined) {
    const client = c.client as { status?: unknown; duplicate?: unknown } | null;
    if (!client || typeof client.duplicate !== 'function' || typeof client.status !== 'string') {
      problems.add(`${path}.client`, 'must be an ioredis Redis or Cluster instance');
    } else {
      if (client instanceof Cluster && c.readOnlyGraceMs !== undefined) {
        problems.add(`${path}.readOnlyGraceMs`, NOT_FOR_A_CLUSTER);
      }
      if (!hasCommandTimeout(client)) problems.add(`${path}.client`, noCommandTimeout(client));
      // ioredis puts both into Node timers: past MAX_TIMER_MS each fires after 1 ms (every call, every connect fails)
      for (const [name, ms] of Object.entries(clientTimeouts(client)))
        if (typeof ms === 'number' && Number.isFinite(ms) && ms > MAX_TIMER_MS)
          problems.add(`${path}.client`, `${name} ${timerProblem(ms)}`);
      checkClientReplyOptions(path, client as Redis | Cluster, problems);
    }
  }
}

/**
 * The toolkit's commandTimeout is set on the clients it creates; a `{ client }` is used as it is, and on a paused or
 * silent server (SIGSTOP, a blackholed route) a call without a timeout waits without end: every feature on it hangs
 * instead of failing over to its failure policy.
 */
function hasCommandTimeout(client: object): boolean {
  const ms = clientTimeouts(client).commandTimeout;
  return typeof ms === 'number' && ms > 0 && Number.isFinite(ms);
}

/** The timeouts a `{ client }` was created with (a Cluster's from its redisOptions): each goes into a Node timer. */
function clientTimeouts(client: object): { commandTimeout?: unknown; connectTimeout?: unknown } {
  const options = (client instanceof Cluster ? client.options.redisOptions : (client as Redis).options) ?? {};
  return { commandTimeout: options.commandTimeout, connectTimeout: options.connectTimeout };
}

/**
 * A Cluster with a commandTimeout, and the maxRedirections that lets a call wait that long while its slot migrates
 * (fewer is a warning at start: cluster-redirections.ts). Cluster.duplicate's first argument is the startup nodes
 * (`[]`: the same), and ioredis merges the redisOptions given into the cluster's (maxRetriesPerRequest: null is kept).
 */
const CLUSTER_TIMEOUTS = `{ maxRedirections: ${redirectionsWithin(1000)}, redisOptions: { commandTimeout: 1000 } }`;

function noCommandTimeout(client: object): string {
  const cluster = client instanceof Cluster;
  const options = (cluster ? client.options.redisOptions : (client as Redis).options) ?? {};
  const text =
    'has no commandTimeout: on a paused or unreachable server every call of the toolkit on it would wait without end ' +
    "(the toolkit's commandTimeout applies to the clients it creates). Create it with one: " +
    (cluster ? `new Cluster(nodes, ${CLUSTER_TIMEOUTS})` : 'new Redis(url, { commandTimeout: 1000 })');
  if (options.maxRetriesPerRequest !== null) return text;
  // a Cluster's node options are its redisOptions, and its duplicate's first argument is the startup nodes
  const copy = cluster ? `cluster.duplicate([], ${CLUSTER_TIMEOUTS})` : 'client.duplicate({ commandTimeout: 1000 })';
  return (
    `${text}. On a client you also give BullMQ (maxRetriesPerRequest: null), a commandTimeout under 11000 ms ` +
    'cuts the blocking reads (up to 10 s) of the duplicates its Worker and QueueEvents make ("Command timed out" ' +
    `while idle): give the toolkit ${copy} instead`
  );
}

const NOT_FOR_A_CLUSTER =
  'cannot be used with a cluster: its client sends writes to the masters of its slot table (a replica answers ' +
  'MOVED), and READONLY there always follows the failure policy (docs/connections.md)';

const SENTINEL_ONLY = ['name', 'sentinelUsername', 'sentinelPassword', 'sentinelTls'] as const;

/**
 * An option the connection's kind does not use was dropped without a word (`{ client, db: 4 }` stayed on the
 * client's db, `sentinelPassword` beside host/port did nothing): each is an error naming the kind it belongs to.
 */
function checkOptionsOfKind(path: string, c: Record<string, unknown>, kind: string, problems: OptionProblems): void {
  if (kind === 'client') {
    for (const key of Object.keys(CONNECTION_OPTION_KEYS)) {
      // readOnlyGraceMs is the toolkit's, not the client's: it applies to a client of yours too.
      if (key !== 'client' && key !== 'readOnlyGraceMs' && c[key] !== undefined)
        problems.add(
          `${path}.${key}`,
          'cannot be used with client: the client you pass is used as it is (set it there)',
        );
    }
    return;
  }
  if (kind !== 'sentinels') {
    for (const key of SENTINEL_ONLY)
      if (c[key] !== undefined) problems.add(`${path}.${key}`, 'is for sentinels: give it with sentinels');
  }
  if (kind !== 'cluster' && c.clusterOptions !== undefined)
    problems.add(`${path}.clusterOptions`, 'is for a cluster: give it with cluster');
  if (kind === 'cluster' && c.db !== undefined)
    problems.add(`${path}.db`, 'cannot be used with a cluster (it has only db 0)');
  if (kind === 'cluster' && c.readOnlyGraceMs !== undefined) problems.add(`${path}.readOnlyGraceMs`, NOT_FOR_A_CLUSTER);
}

/** What a url sets besides its host and port. */
interface UrlSettings {
  db?: number;
  /** Decoded, when the url has a user name or a password (ioredis then sets both, `''` for the one missing). */
  credentials?: { username: string; password: string };
}

/**
 * ioredis lets what the url sets win over the option given beside it: `{ url: 'redis://h/2', db: 5 }` ran on db 2,
 * `{ url: 'redis://app@h', password }` connected without a password. Both given and different is an error naming
 * both, never showing a password.
 */
function checkUrlAgainstOptions(
  path: string,
  fromUrl: UrlSettings,
  c: Record<string, unknown>,
  problems: OptionProblems,
): void {
  if (fromUrl.db !== undefined && typeof c.db === 'number' && c.db !== fromUrl.db)
    problems.add(`${path}.db`, `is ${c.db} but ${path}.url selects db ${fromUrl.db}: give the db once`);
  const credentials = fromUrl.credentials;
  if (credentials === undefined) return;
  for (const [key, name] of [
    ['username', 'user name'],
    ['password', 'password'],
  ] as const) {
    if (c[key] !== undefined && c[key] !== credentials[key])
      problems.add(`${path}.${key}`, `and the ${name} in ${path}.url differ (the url's would be used): give it once`);
  }
}

/** `connections`: each entry checked like `connection` (and for unknown keys); `default` is `connection` itself. */
export function checkNamedConnections(
  connections: unknown,
  shape: OptionShape,
  problems: OptionProblems,
): RedisNamedConnections {
  if (connections === undefined || !problems.object('connections', connections)) return {};
  const named = connections as Record<string, unknown>;
  for (const [name, connection] of Object.entries(named)) {
    const path = `connections.${name}`;
    if (name === DEFAULT_CONNECTION_NAME) {
      problems.add(path, 'is not allowed: the default connection is `connection`');
      continue;
    }
    if (!/^[A-Za-z0-9_.:-]+$/.test(name)) {
      problems.add(path, 'has a name that is not letters, digits, `_`, `-`, `.` or `:`');
      continue;
    }
    checkConnection(path, connection, problems);
    problems.unknownKeys(path, connection, shape);
  }
  return named as RedisNamedConnections;
}

/**
 * The connection name of each feature (`default` when it names none). A name that `connections` lacks is an error
 * naming the known ones and the nearest: a typo must not put sessions on the volatile default server.
 */
export function resolveFeatureConnections(
  slices: Partial<Record<ConnectionFeature, unknown>>,
  connections: RedisNamedConnections,
  problems: OptionProblems,
): Record<ConnectionFeature, string> {
  const known = [DEFAULT_CONNECTION_NAME, ...Object.keys(connections)];
  const out = {} as Record<ConnectionFeature, string>;
  for (const feature of CONNECTION_FEATURES) {
    const slice = slices[feature];
    const name =
      slice !== null && typeof slice === 'object' ? (slice as { connection?: unknown }).connection : undefined;
    out[feature] = DEFAULT_CONNECTION_NAME;
    if (name === undefined) continue;
    if (typeof name !== 'string' || name === '') {
      problems.string(`${feature}.connection`, name);
      continue;
    }
    if (!known.includes(name)) {
      const near = nearest(name, known);
      const list = known.map((k) => JSON.stringify(k)).join(', ');
      problems.add(
        `${feature}.connection`,
        `names an unknown connection ${JSON.stringify(name)}: known are ${list}` +
          `${near ? ` (did you mean ${JSON.stringify(near)}?)` : ''}; add it under \`connections\``,
      );
      continue;
    }
    out[feature] = name;
  }
  return out;
}

/**
 * `url` for an error message with its password replaced by `***` (`redis://app:***@host:6379`). A url that does not
 * parse, or has an '@' after the host (a raw '/', '?' or '#' in the password ended the user-info early), is masked
 * from '//' to the last '@': there no part of the user-info can be told apart from the host.
 */
export function maskUrl(url: string, parsed?: URL): string {
  const at = url.lastIndexOf('@');
  if (at === -1) return url;
  if (parsed !== undefined && !hasAtAfterHost(parsed)) {
    const { protocol, username, password, host, pathname, search, hash } = parsed;
    return `${protocol}//${username}${password === '' ? '' : ':***'}@${host}${pathname}${search}${hash}`;
  }
  const slashes = url.indexOf('//');
  const start = slashes !== -1 && slashes < at ? slashes + 2 : url.indexOf(':') + 1;
  return `${url.slice(0, start)}***${url.slice(at)}`;
}

const hasAtAfterHost = (u: URL): boolean => `${u.pathname}${u.search}${u.hash}`.includes('@');

/**
 * Every message about a url shows it through maskUrl: the url may hold a password. Returns what the url sets when
 * it is a valid one.
 */
function checkUrl(path: string, url: unknown, problems: OptionProblems): UrlSettings | undefined {
  if (typeof url !== 'string') {
    problems.string(path, url, { secret: true });
    return undefined;
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    problems.add(
      path,
      `is not a valid URL: ${JSON.stringify(maskUrl(url))} (expected redis://[user:password@]host:port[/db], ` +
        'rediss:// for TLS)',
    );
    return undefined;
  }
  if (hasAtAfterHost(parsed)) {
    // `redis://app:1234/pw@host`: parses as host `app`, port 1234, path `/pw@host`; it would connect to `app`.
    problems.add(
      path,
      'has an @ after the host: a /, ?, # or @ in the user name or password must be percent-encoded ' +
        `(%2F, %3F, %23, %40): ${JSON.stringify(maskUrl(url))}`,
    );
    return undefined;
  }
  let credentials: UrlSettings['credentials'];
  try {
    // ioredis decodes both with decodeURIComponent when it builds the client: a raw `%` threw an untyped URIError.
    const [username, password] = [decodeURIComponent(parsed.username), decodeURIComponent(parsed.password)];
    if (username !== '' || password !== '') credentials = { username, password };
  } catch {
    problems.add(
      path,
      'has a user name or password that is not valid percent-encoding: write a % in it as %25 ' +
        `(a /, ?, # or @ as %2F, %3F, %23, %40): ${JSON.stringify(maskUrl(url, parsed))}`,
    );
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
    problems.add(path, `must start with redis:// or rediss://, got ${parsed.protocol}//`);
  }
  if (parsed.hostname === '') {
    // ioredis fills a missing host with localhost:6379, and takes `redis:///tmp/redis.sock` for db "tmp/redis.sock"
    // there: a unix socket path is not a url here.
    const shown = JSON.stringify(maskUrl(url, parsed));
    const socket = 'a unix socket needs a client of your own: pass it as { client } (new Redis({ path }))';
    problems.add(path, `names no host (redis://host:port/db): ${shown}; ${socket}`);
    return undefined;
  }
  if (parsed.port !== '' && (Number(parsed.port) < 1 || Number(parsed.port) > 65_535)) {
    problems.add(path, `has a port out of range: ${parsed.port}`);
  }
  // ioredis takes the path for the db and parseInt()s it: `/abc` became NaN and ran on db 0 without a word.
  const db = /^\/(0|[1-9]\d*)$/.exec(parsed.pathname)?.[1];
  if (parsed.pathname.length > 1 && (db === undefined || Number(db) > MAX_DB)) {
    const shown = JSON.stringify(maskUrl(url, parsed));
    problems.add(path, `has a path that is not a db index from 0 to ${MAX_DB} (redis://host:port/db): ${shown}`);
  }
  checkUrlQuery(path, parsed, problems);
  return { db: db === undefined ? undefined : Number(db), credentials };
}

/**
 * ioredis copies every query parameter into the client's options, as a string, over what the toolkit sets
 * (`?enableOfflineQueue=true`, `?commandTimeout=999999`) and over the options beside the url (`?db=`, `?password=`);
 * some change every reply or key (`?stringNumbers=true`, `?keyPrefix=`). Only `family` (the address family of the
 * DNS lookup, which ioredis reads as a number) is taken from the query; the names of the others are listed, never
 * their values.
 */
function checkUrlQuery(path: string, parsed: URL, problems: OptionProblems): void {
  const others = [...new Set(parsed.searchParams.keys())].filter((name) => name !== 'family');
  if (others.length > 0) {
    problems.add(
      path,
      `has query parameters that ioredis would apply over the options: ${others.join(', ')}; give the db as the ` +
        'url path, credentials before the host and timeouts as forRoot options (only family is read from the query)',
    );
  }
  if (parsed.searchParams.getAll('family').some((family) => !['0', '4', '6'].includes(family)))
    problems.add(path, 'query parameter family must be 0, 4 or 6');
}

function checkNodes(path: string, nodes: unknown, problems: OptionProblems): void {
  if (!Array.isArray(nodes) || nodes.length === 0) {
    problems.add(path, 'must be a non-empty array of { host, port }');
    return;
  }
  nodes.forEach((node: Partial<RedisNodeAddress>, i) => {
    if (!problems.object(`${path}[${i}]`, node)) return;
    problems.string(`${path}[${i}].host`, node.host);
    if (node.port === undefined) problems.add(`${path}[${i}].port`, 'is required');
    problems.integer(`${path}[${i}].port`, node.port, 1, 65_535);
  });
}
