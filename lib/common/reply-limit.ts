import { Logger } from '@nestjs/common';
import { Cluster, type Redis } from 'ioredis';
import { mayRun } from './acl-check.js';
import { mastersOf, nodeKey, slotMasters } from './cluster-masters.js';
import type { RedisClient } from './lua-script.js';
import { replyBudgetOf } from './reply-budget.js';
import { withTimeout } from './timeout.js';

/**
 * The largest value a server whose `client-output-buffer-limit normal` hard limit is `limit` bytes sends in a reply
 * without closing the connection: Redis counts a reply by the allocator blocks holding it (jemalloc's size classes, up
 * to 1/4 above the bytes asked) and closes at the limit. Measured on Redis 7.0.15 (jemalloc 5.3): under a 1 MiB limit
 * a value of 933,864 bytes closed the connection (89 % of it); 4/5 less 128 bytes was read back under every limit
 * tried from 64 KiB to 5 MiB, also after 16 KiB of other replies in the same batch.
 */
export function boundOfLimit(limit: number): number {
  return Math.max(1, Math.floor((limit * 4) / 5) - 128);
}

/**
 * The start of the warning for an option set past what the server sends in one reply (`what`: `an entry`,
 * `a session`); the caller says what happens then. The cache and sessions warn alike (CacheValueBound,
 * SessionSizeBound).
 */
export function pastServerLimit(option: string, value: number, server: ServerLimit, what: string): string {
  const { where, limit } = server;
  return (
    `${option} (${value} bytes) is past what ${where} sends in one reply: its client-output-buffer-limit normal ` +
    `hard limit is ${limit} bytes, and a read of ${what} over about ${boundOfLimit(limit)} bytes makes it close the ` +
    'connection, failing every call in flight on it, at each read. '
  );
}

/** The `normal` class's hard limit (bytes, 0: none) in a `CONFIG GET client-output-buffer-limit` reply. */
export function normalHardLimit(reply: unknown): number | undefined {
  const text = Array.isArray(reply) ? reply[1] : undefined;
  const hard = typeof text === 'string' ? /(?:^|\s)normal (\d+) \d+ \d+/.exec(text)?.[1] : undefined;
  return hard === undefined ? undefined : Number(hard);
}

/** One master's `normal` hard limit (bytes) and how messages name that server. */
export interface ServerLimit {
  where: string;
  limit: number;
}

/** What was read of the limit of a connection's servers (every master of a cluster). */
export interface ReplyLimit {
  /** The smallest non-zero hard limit read; undefined when each one read is 0 (Redis's default) or none was read. */
  readonly smallest: ServerLimit | undefined;
  /** The masters whose limit could not be read, each with why: `127.0.0.1:6379 (CONFIG GET: NOPERM ...)`. */
  readonly failures: readonly string[];
}

/** The connection a limit is read on: a RedisConnection is one; clientSource makes one of a bare client. */
export interface ReplyLimitSource {
  readonly client: RedisClient;
  /** No CONFIG GET waits longer (ms). */
  readonly commandTimeout: number;
  /** How messages name a single server. */
  readonly description: string;
}

/** A feature's part of the one log line said when a limit could not be read. */
export interface UnreadNote {
  /** What that leaves the feature with: `no bound on the size of a cached value`. */
  consequence: string;
  /** The option that bounds it instead: `cache.maxValueBytes`. */
  option: string;
}

/** A feature bounded by the limit (CacheValueBound, SessionSizeBound). */
export interface ReplyLimitUser {
  /**
   * The limit as read: at the first read, then again at each reconnect whose read got every master's (the same limit,
   * or another after a CONFIG SET); never after the user left. Its warnings are its own (said once per limit).
   */
  take(limit: ReplyLimit): void;
  /** Asked after take when some master's limit could not be read: its part of the log line, or nothing to say. */
  unread(limit: ReplyLimit): UnreadNote | undefined;
}

/** A user's hold on the shared read of its connection's limit (watchReplyLimit). */
export interface ReplyLimitWatch {
  /**
   * Reads the limit now when connected (resolves once read; never rejects), else at the first `ready`; again at each
   * later `ready` (a reconnect).
   */
  start(): Promise<void>;
  /** The read in flight, which a write may wait for; undefined when none is (read already, or not started). */
  pending(): Promise<void> | undefined;
  /** Leaves: nothing more is given to this user; the last to leave takes the `ready` listener off the client. */
  close(): void;
}

/** A bare client as a source (RedisSessionStore's): named by its address, its reads bounded by `timeoutMs`. */
export function clientSource(client: RedisClient, timeoutMs: number): ReplyLimitSource {
  const o = client instanceof Cluster ? undefined : client.options;
  const description = o === undefined ? 'the cluster' : o.path ? String(o.path) : `${o.host}:${o.port}`;
  return { client, commandTimeout: timeoutMs, description };
}

/**
 * Joins `user` to the read of its connection's limit: one per client (the cache and the sessions on one connection,
 * and RedisSessionStores on that client, send one CONFIG GET per master between them, not one each), held while any
 * user is. A user that joins once the limit is read is given it at once.
 */
export function watchReplyLimit(source: ReplyLimitSource, user: ReplyLimitUser): ReplyLimitWatch {
  let reading = readings.get(source.client);
  if (reading === undefined) {
    reading = new SharedReading(source);
    readings.set(source.client, reading);
  }
  const shared = reading;
  shared.join(user);
  return {
    start: () => shared.start(),
    pending: () => shared.pending(),
    close: () => shared.leave(user),
  };
}

/** Says, once per connection, that a limit could not be read: a `log` line (the documented ACL user has no CONFIG). */
const LOGGER = new Logger('RedisToolkit');
const readings = new WeakMap<RedisClient, SharedReading>();
const resolved = Promise.resolve();

/**
 * The read of one client's limit and the users it is given to. Read at start (or the first `ready`), then again at
 * each reconnect (every later `ready` while a user holds it): an operator's `CONFIG SET client-output-buffer-limit`
 * is taken at the next reconnect, not on a live connection (no periodic CONFIG GET: a command per master on a timer
 * for a setting that rarely changes). A read again that could not read some master keeps what was read before. Each
 * read sets the client's reply budget (reply-budget.ts): the bound of its smallest non-zero limit, or none.
 */
class SharedReading {
  private result: ReplyLimit | undefined;
  private reading: Promise<void> | undefined;
  private listening = false;
  private readonly users = new Set<ReplyLimitUser>();
  /** The consequences said in a log line already: a user joining later with the same one says nothing more. */
  private readonly said = new Set<string>();
  private readonly onReady = (): void => {
    if (this.result === undefined && this.reading === undefined) void this.read();
    else if (this.result !== undefined) void this.readAgain();
  };

  constructor(private readonly source: ReplyLimitSource) {}

  join(user: ReplyLimitUser): void {
    this.users.add(user);
    if (this.result !== undefined) this.give([user], this.result);
  }

  start(): Promise<void> {
    this.listen();
    if (this.result !== undefined) return resolved;
    if (this.reading !== undefined) return this.reading;
    if (this.source.client.status === 'ready') return this.read();
    return resolved;
  }

  pending(): Promise<void> | undefined {
    return this.result === undefined ? this.reading : undefined;
  }

  leave(user: ReplyLimitUser): void {
    if (!this.users.delete(user) || this.users.size > 0) return;
    if (this.listening) {
      this.listening = false;
      this.source.client.off('ready', this.onReady);
    }
    // the next user of this client (another app on a client of the user's) reads the limit again
    if (readings.get(this.source.client) === this) readings.delete(this.source.client);
  }

  /** Listens for every `ready` of the client while a user holds the reading. */
  private listen(): void {
    if (this.listening) return;
    this.listening = true;
    this.source.client.on('ready', this.onReady);
  }

  private read(): Promise<void> {
    this.reading ??= readLimit(this.source).then((limit) => {
      this.result = limit;
      this.budget(limit);
      this.give([...this.users], limit);
    });
    return this.reading;
  }

  /** At a reconnect: the users get what is read when every master's limit was read, else keep the last read. */
  private async readAgain(): Promise<void> {
    const limit = await readLimit(this.source);
    if (limit.failures.length > 0 || this.users.size === 0) return;
    this.result = limit;
    this.budget(limit);
    for (const user of this.users) user.take(limit);
  }

  /** The client's reply budget: the bound of the smallest non-zero limit, or none (0). */
  private budget({ smallest }: ReplyLimit): void {
    const bound = smallest === undefined ? 0 : boundOfLimit(smallest.limit);
    replyBudgetOf(this.source.client).setBound(bound, this.source.commandTimeout);
  }

  /** The limit to each user, then one log line for what the users not told yet say of a limit not read. */
  private give(users: ReplyLimitUser[], limit: ReplyLimit): void {
    for (const user of users) user.take(limit);
    if (limit.failures.length === 0) return;
    const notes: UnreadNote[] = [];
    for (const user of users) {
      const note = user.unread(limit);
      if (note === undefined || this.said.has(note.consequence)) continue;
      this.said.add(note.consequence);
      notes.push(note);
    }
    if (notes.length === 0) return;
    LOGGER.log(
      `could not read client-output-buffer-limit of ${limit.failures.join(', ')}: ` +
        `${notes.map((n) => n.consequence).join('; ')}. A value whose reply is past that server's normal hard limit ` +
        `makes it close the connection, failing every call in flight on it, at each read; set ` +
        `${notes.map((n) => n.option).join(' and ')}, or allow CONFIG GET (ACL +config|get) to have it read`,
    );
  }
}

const CONFIG_GET = ['config', 'get', 'client-output-buffer-limit'];
const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/**
 * One CONFIG GET per master, in parallel, each within commandTimeout; never rejects: what could not be read is in
 * `failures` (CONFIG refused by the ACL, renamed, a timeout, a master out of reach). The commands are sent before this
 * returns (unless a cluster's pool lacks a master): a caller counting the commands of its next call does not see them.
 */
async function readLimit(source: ReplyLimitSource): Promise<ReplyLimit> {
  const { client, commandTimeout: ms } = source;
  const limits: ServerLimit[] = [];
  const failures: string[] = [];
  const ask = async (node: Redis): Promise<void> => {
    const where = client instanceof Cluster ? `cluster master ${nodeKey(node)}` : source.description;
    // asked first without running it: a CONFIG GET the ACL refuses leaves an entry in ACL LOG at every start (the
    // documented ACL line has no CONFIG), which an operator watching ACL LOG would take for an intrusion
    if ((await mayRun(node, CONFIG_GET, ms)) === false) {
      failures.push(`${where} (CONFIG GET: NOPERM: the ACL user may not run it; asked with redis.acl_check_cmd)`);
      return;
    }
    try {
      const reply = await withTimeout(
        node.config('GET', 'client-output-buffer-limit'),
        ms,
        `no reply within commandTimeout (${ms} ms)`,
      );
      const limit = normalHardLimit(reply);
      if (limit === undefined) failures.push(`${where} (CONFIG GET answered ${JSON.stringify(reply)})`);
      else limits.push({ where, limit });
    } catch (err) {
      failures.push(`${where} (CONFIG GET: ${message(err)})`);
    }
  };
  if (client instanceof Cluster) {
    let nodes: Redis[] = [];
    try {
      nodes = mastersAtOnce(client) ?? (await mastersOf(client));
    } catch (err) {
      failures.push(`${source.description} (${message(err)})`);
    }
    await Promise.all(nodes.map(ask));
  } else await ask(client);
  let smallest: ServerLimit | undefined;
  for (const l of limits) if (l.limit > 0 && (smallest === undefined || l.limit < smallest.limit)) smallest = l;
  return { smallest, failures };
}

/** Every master's connection when the pool has each one the slot table names (mastersOf without waiting), else none. */
function mastersAtOnce(cluster: Cluster): Redis[] | undefined {
  const nodes = cluster.nodes('master');
  const have = new Set(nodes.map(nodeKey));
  return slotMasters(cluster).every(({ host, port }) => have.has(`${host}:${port}`)) ? nodes : undefined;
}
