import { Cluster, type Command } from 'ioredis';
import { noteAsk } from '../common/cluster-masters.js';
import type { RedisConnectionOptions } from './connection.options.js';

/** ioredis's message for a command that outlived its commandTimeout (the toolkit's timer says the same). */
export const COMMAND_TIMED_OUT = 'Command timed out';

/** ioredis's default retryDelayOnTryAgain (ms). */
const TRY_AGAIN_DELAY_MS = 100;
/** ioredis's default maxRedirections. */
const IOREDIS_MAX_REDIRECTIONS = 16;

/**
 * Enough redirections that commandTimeout, not their count, bounds a call while its slot migrates. A script whose keys
 * are not all on one node of a migrating slot (some moved, or absent: a lock's key beside its fence) gets TRYAGAIN
 * until the slot settles; ioredis asks again every retryDelayOnTryAgain on a random node, which answers MOVED (then
 * ASK) back: up to 3 redirections a round. With ioredis's 16 such a call failed after ~0.6 s ("Too many Cluster
 * redirections") where commandTimeout allowed more and the slot settled meanwhile.
 */
export function redirectionsWithin(commandTimeout: number, tryAgainDelay = TRY_AGAIN_DELAY_MS): number {
  return IOREDIS_MAX_REDIRECTIONS + 3 * Math.ceil(commandTimeout / Math.max(1, tryAgainDelay));
}

/**
 * The warning for a cluster whose maxRedirections runs out before its commandTimeout while a slot migrates, or
 * undefined: a `{ client }` Cluster of the user's (used as it is: ioredis's default is 16), or `clusterOptions` that
 * set maxRedirections below what the toolkit would. Such a call fails with "Too many Cluster redirections" after
 * ~0.6 s of TRYAGAIN rounds where commandTimeout allowed the reshard to finish (test/faults/cluster-reshard-more.spec).
 */
export function fewRedirectionsWarning(
  c: RedisConnectionOptions,
  commandTimeout: number,
  description: string,
): string | undefined {
  let options: { maxRedirections?: number; retryDelayOnTryAgain?: number; commandTimeout?: unknown };
  let where: string;
  if ('client' in c) {
    if (!(c.client instanceof Cluster)) return undefined;
    const o = c.client.options;
    options = { ...o, commandTimeout: o.redisOptions?.commandTimeout };
    where = description; // the client given in connection.client
  } else if ('cluster' in c) {
    const o = c.clusterOptions ?? {};
    if (o.maxRedirections === undefined) return undefined; // the toolkit's own: redirectionsWithin
    options = { ...o, commandTimeout: o.redisOptions?.commandTimeout ?? commandTimeout };
    where = `the clusterOptions of ${description}`;
  } else return undefined;
  const ms = typeof options.commandTimeout === 'number' ? options.commandTimeout : commandTimeout;
  const delay = options.retryDelayOnTryAgain ?? TRY_AGAIN_DELAY_MS;
  const have = options.maxRedirections ?? IOREDIS_MAX_REDIRECTIONS;
  const want = redirectionsWithin(ms, delay);
  if (have >= want) return undefined;
  const lasts = Math.round((have / 3) * delay);
  return (
    `${where} has maxRedirections ${have}: while a hash slot migrates (a reshard), a call whose keys are split ` +
    `between the two nodes is answered TRYAGAIN and asked again every ${delay} ms (retryDelayOnTryAgain), and fails ` +
    `with "Too many Cluster redirections" after about ${lasts} ms although its commandTimeout (${ms} ms) allows ` +
    `the slot to settle. Give it maxRedirections: ${want} (what the toolkit sets on the clusters it creates).`
  );
}

/** The TRYAGAIN and ASK replies one command got while its slot migrated. */
interface Redirects {
  tryAgain: number;
  ask: number;
  /** The last of them (the command's cause when it times out). */
  last: Error;
}

/** Only for the commands that got a TRYAGAIN or ASK: most never do. */
const seen = new WeakMap<Command, Redirects>();

/** Marks a reject already wrapped by noteMigrationReplies (a command the cluster sends again from its queue). */
const NOTING = Symbol('notes TRYAGAIN and ASK');

/**
 * Keeps the TRYAGAIN and ASK replies `command` gets from the cluster's nodes (called once the cluster took it: its own
 * reject, which follows redirections, is in place), so that a timeout says the call waited on a migrating slot, and
 * each ASK's slot and node (noteAsk). One closure per command, as ioredis's own; the record only for a command
 * redirected so.
 */
export function noteMigrationReplies(cluster: Cluster, command: Command): void {
  const reject = command.reject as Command['reject'] & { [NOTING]?: true };
  if (reject[NOTING]) return;
  const noting = function (this: Command, err: Error) {
    const word = err instanceof Error ? /^(TRYAGAIN|ASK) /.exec(err.message)?.[1] : undefined;
    if (word !== undefined) {
      let redirects = seen.get(command);
      if (redirects === undefined) seen.set(command, (redirects = { tryAgain: 0, ask: 0, last: err }));
      if (word === 'TRYAGAIN') redirects.tryAgain++;
      else {
        redirects.ask++;
        noteAsk(cluster, err.message); // which node the slot's moved keys are read from (the reply budget's)
      }
      redirects.last = err;
    }
    return reject.call(this, err);
  };
  (noting as typeof reject)[NOTING] = true;
  command.reject = noting;
}

/**
 * The error for a command that outlived commandTimeout: `Command timed out`, as ioredis says it, and when the command
 * was answered TRYAGAIN or ASK meanwhile (its hash slot migrating to another node: a reshard), that said too, with the
 * last such reply as its cause, so the log shows it was the reshard and not a slow or lost server.
 */
export function commandTimedOut(command: Command): Error {
  const r = seen.get(command);
  if (r === undefined) return new Error(COMMAND_TIMED_OUT);
  const slot = command.getSlot();
  const replies = [
    r.tryAgain > 0 ? `TRYAGAIN ${times(r.tryAgain)}` : '',
    r.ask > 0 ? `ASK ${times(r.ask)}` : '',
  ].filter((s) => s !== '');
  return new Error(
    `${COMMAND_TIMED_OUT} while its hash slot${typeof slot === 'number' ? ` ${slot}` : ''} was migrating to ` +
      `another node (a reshard; Redis answered ${replies.join(' and ')}, last: ${r.last.message})`,
    { cause: r.last },
  );
}

const times = (n: number): string => (n === 1 ? 'once' : `${n} times`);

/** Whether `err` is a command's timeout (commandTimedOut's, with or without the migration it waited on). */
export function isCommandTimeout(err: unknown): boolean {
  return err instanceof Error && (err.message === COMMAND_TIMED_OUT || err.message.startsWith(`${COMMAND_TIMED_OUT} `));
}
