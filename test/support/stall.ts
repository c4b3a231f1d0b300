/**
 * The event loop stalled at a known moment, for the tests of how the toolkit's timers judge replies that came while it
 * was blocked (busy-machine.hostile, stall-verdicts, lock-stall-verdicts). A stall placed at a command's write rather
 * than at a guessed moment makes the interleaving the same on every run.
 */
import type { Command, Redis } from 'ioredis';

/** The event loop blocked for `ms` (a synchronous busy loop, as a slow JSON.parse or a sync crypto call would). */
export function busy(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // spin
  }
}

/** Whatever command is sent first. */
export const ANY_COMMAND = Symbol('any command');

/**
 * Where a stall on send begins: `in-send`, inside the send of the first command that matches; `written`, once each
 * client has been sent one, right after the callback that sent the last (see stallOnSend).
 */
export type StallAt = 'in-send' | 'written';

export interface Stall {
  /** Whether the stall happened. */
  fired(): boolean;
  /** The name of the command that set it off. */
  firedBy(): string;
}

/**
 * Once, blocks the event loop for `ms` when a command named in `names` (any command: ANY_COMMAND) is sent on one of
 * `clients` (standalone connections: a cluster's are its `nodes()`), then puts their sendCommand back.
 * - `in-send` (default): right after the first such command is handed to its connection: the reply arrives while the
 *   loop is blocked (as when the stall begins in any callback after the send). A connection that corks its writes
 *   until the end of the turn (a quorum node's lock calls) writes the request only after the stall.
 * - `written`: once every one of `clients` has been sent such a command, right after the callback that sent the last
 *   (process.nextTick: the sockets uncorked, every request on its way, the replies come during the stall).
 */
export function stallOnSend(
  clients: readonly Redis[],
  names: readonly string[] | typeof ANY_COMMAND,
  ms: number,
  at: StallAt = 'in-send',
): Stall {
  const sent = new Set<number>();
  const restore: (() => void)[] = [];
  let fired = false;
  let firedBy = '';
  const fire = (): void => {
    if (fired) return;
    fired = true;
    for (const undo of restore) undo();
    busy(ms);
  };
  clients.forEach((client, i) => {
    const own = Object.getOwnPropertyDescriptor(client, 'sendCommand');
    const send = client.sendCommand;
    restore.push(() => {
      if (own) Object.defineProperty(client, 'sendCommand', own);
      else delete (client as { sendCommand?: unknown }).sendCommand;
    });
    client.sendCommand = ((command: Command, stream?: Parameters<Redis['sendCommand']>[1]) => {
      const result = send.call(client, command, stream);
      if (!fired && (names === ANY_COMMAND || names.includes(command.name))) {
        firedBy = command.name;
        sent.add(i);
        if (at === 'in-send') fire();
        else if (sent.size === clients.length) process.nextTick(fire);
      }
      return result;
    }) as Redis['sendCommand'];
  });
  return { fired: () => fired, firedBy: () => firedBy };
}
