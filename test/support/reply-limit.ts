/**
 * What the specs of the size bound taken from `client-output-buffer-limit` share (cache.value-size.spec.ts,
 * session.reply-limit.spec.ts): the server limit most of their cases run under, the bound the toolkit takes from it,
 * a logger keeping every line, and a user that cannot run CONFIG (the limit cannot be read).
 */
import { randomBytes } from 'node:crypto';
import type { LoggerService } from '@nestjs/common';
import { Cluster, Redis } from 'ioredis';
import { trackForCleanup } from './private-servers.js';
import { rawCommand } from './resp.js';
import type { RedisServerHandle } from './redis-server.js';

/** The redis-server arguments of that limit: 256 KiB, `client-output-buffer-limit normal 256kb 128kb 10`. */
export const LIMITED = ['--client-output-buffer-limit', 'normal 256kb 128kb 10'];
/** That limit in bytes. */
export const LIMIT = 262_144;
/** The bound taken from it: 4/5 of the hard limit, less 128 bytes (209,587; docs/cache.md). */
export const BOUND = Math.floor((LIMIT * 4) / 5) - 128;

/** A logger that keeps every line the toolkit logs, by level (recordingLogger drops `log` lines). */
export function allLines(): { logs: string[]; warnings: string[]; logger: LoggerService } {
  const logs: string[] = [];
  const warnings: string[] = [];
  const logger: LoggerService = {
    log: (m: unknown) => void logs.push(String(m)),
    warn: (m: unknown) => void warnings.push(String(m)),
    error: (m: unknown) => void warnings.push(`error: ${String(m)}`),
    debug: (m: unknown) => void logs.push(String(m)),
    verbose: (m: unknown) => void logs.push(String(m)),
  };
  return { logs, warnings, logger };
}

/** Makes the ACL user `noconfig` of `server`, allowed every command but CONFIG: its URL, and the admin client. */
export async function noConfigUser(server: RedisServerHandle): Promise<{ url: string; admin: Redis }> {
  const admin = trackForCleanup(new Redis(server.url));
  const password = randomBytes(8).toString('hex');
  await admin.call('acl', 'setuser', 'noconfig', 'reset', 'on', `>${password}`, '~*', '&*', '+@all', '-config');
  return { url: `redis://noconfig:${password}@127.0.0.1:${server.port}`, admin };
}

/** Gives a cluster's first three masters the limits 1 MiB, 256 KiB (the smallest non-zero: the second's) and none. */
export async function limitThreeMasters(masters: readonly { port: number }[]): Promise<void> {
  const limits = ['normal 1mb 512kb 10', 'normal 256kb 128kb 10', 'normal 0 0 0'];
  for (const [i, limit] of limits.entries())
    await rawCommand(masters[i].port, ['CONFIG', 'SET', 'client-output-buffer-limit', limit]);
}

/** `client-output-buffer-limit normal 1mb 0 0`: the budget specs' limit (a hard limit of 1 MiB, no soft limit). */
export const ONE_MIB = ['--client-output-buffer-limit', 'normal 1mb 0 0'];

/**
 * Counts the connections `client` lost from now on (each master's own connection of a cluster, as the pool has it
 * now): a reply past the server's limit makes Redis close the connection, which ioredis sees as a `close`.
 */
export function countCloses(client: Redis | Cluster): () => number {
  let closes = 0;
  const connections: Redis[] = client instanceof Cluster ? client.nodes('master') : [client];
  for (const connection of connections) connection.on('close', () => void closes++);
  return () => closes;
}

/** A turn of the event loop: what is asked before and after it goes out in separate writes (separate batches). */
export const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** redis-server arguments allowing DEBUG (asleep): Redis 7 refuses it by default. */
export const DEBUG_ALLOWED = ['--enable-debug-command', 'yes'];

/**
 * Puts the server of `admin` to sleep for `ms` (DEBUG SLEEP; the server needs DEBUG_ALLOWED) and resolves once it
 * sleeps, with a wait for its waking: what clients send meanwhile is read in one go when it wakes, and Redis builds
 * all of its replies before writing any, as with commands that arrive together. Without it, whether commands sent
 * in one turn were read together depended on the timing of the box.
 */
export async function asleep(admin: Redis, ms: number): Promise<() => Promise<unknown>> {
  const woken = admin.call('debug', 'sleep', String(ms / 1_000));
  await new Promise((resolve) => setTimeout(resolve, 30));
  return () => woken;
}
