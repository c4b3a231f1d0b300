import { Redis } from 'ioredis';
import { rawCommand } from './resp.js';

/**
 * A server to read `INFO commandstats` from: its URL (a connection of its own, closed after), its port on 127.0.0.1
 * (one raw RESP call, so nothing else reaches the server), or a client already connected to it.
 */
export type StatsSource = string | number | { info(section: 'commandstats'): Promise<string> };

/** One `cmdstat_<command>` line. */
export interface CommandStat {
  calls: number;
  /** Microseconds the server spent in the command. */
  usec: number;
  /** Calls refused before they ran (unknown command, wrong arity, ACL, OOM...). */
  rejectedCalls: number;
  failedCalls: number;
}

async function readInfo(source: StatsSource): Promise<string> {
  if (typeof source === 'number') return String(await rawCommand(source, ['INFO', 'commandstats']));
  if (typeof source !== 'string') return String(await source.info('commandstats'));
  const admin = new Redis(source);
  try {
    return await admin.info('commandstats');
  } finally {
    await admin.quit();
  }
}

/** `INFO commandstats` of `source` by command (`publish`, `client|tracking`, ...); Redis omits those never called. */
export async function commandStats(source: StatsSource): Promise<Record<string, CommandStat>> {
  const stats: Record<string, CommandStat> = {};
  for (const m of (await readInfo(source)).matchAll(/^cmdstat_([^:]+):(.*)$/gm)) {
    const field = (name: string) => Number(new RegExp(`(?:^|,)${name}=(\\d+)`).exec(m[2])?.[1] ?? 0);
    stats[m[1]] = {
      calls: field('calls'),
      usec: field('usec'),
      rejectedCalls: field('rejected_calls'),
      failedCalls: field('failed_calls'),
    };
  }
  return stats;
}

/** `INFO commandstats` of `source`: calls by command (`publish`, `client|tracking`, ...). */
export async function commandCalls(source: StatsSource): Promise<Record<string, number>> {
  const calls: Record<string, number> = {};
  for (const [command, stat] of Object.entries(await commandStats(source))) calls[command] = stat.calls;
  return calls;
}

/** The calls of `commands` (names, or those the predicate accepts) summed, e.g. `['eval', 'evalsha']`. */
export function sumCalls(
  calls: Record<string, number>,
  commands: readonly string[] | ((command: string) => boolean),
): number {
  const counted = typeof commands === 'function' ? commands : (c: string) => commands.includes(c);
  let total = 0;
  for (const [command, n] of Object.entries(calls)) if (counted(command)) total += n;
  return total;
}

/** `CONFIG RESETSTAT` on the server at `url`: its command counts start from 0. */
export async function resetCommandCalls(url: string): Promise<void> {
  const admin = new Redis(url);
  try {
    await admin.config('RESETSTAT');
  } finally {
    await admin.quit();
  }
}
