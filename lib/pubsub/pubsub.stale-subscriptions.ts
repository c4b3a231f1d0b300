/**
 * Subscriptions whose (P|S)SUBSCRIBE failed by a transport failure (commandTimeout on a paused server) and are no
 * longer wanted. Such a command may still be run: Redis reads it once it answers again, and when the toolkit dropped
 * the connection meanwhile (a timed-out command does), ioredis takes the late reply into the set it re-subscribes on
 * the next connection. Left alone it stayed subscribed for good: publishes counted a receiver that got nothing and
 * each instance kept being sent that channel. So its UN-command is sent at once and, should that fail (the connection
 * being dropped), again after each reconnect once the re-sent subscriptions are in effect, until it succeeds or the
 * name is wanted again.
 *
 * The same goes for an unsubscribe that failed in transport (Redis down or paused): ioredis takes a channel out of
 * the set it re-sends after a reconnect only when Redis confirms the UN-command, so until 2026-12-06 each channel
 * unsubscribed while Redis was down was subscribed again by the next reconnect, for good
 * (test/pubsub/pubsub.churn.spec.ts). At most one entry per name, each a name the connection had subscribed: never
 * more than ioredis's own set.
 */
export class StaleSubscriptions<S extends { readonly name: string }> {
  private readonly stale = new Map<string, S>();

  constructor(
    /** Whether `name` has handlers again (its new subscription then stands). */
    private readonly wanted: (name: string) => boolean,
    /** Sends the (P|S)UNSUBSCRIBE of `sub` unless it is wanted again; resolves whether Redis confirmed it. */
    private readonly unsubscribe: (sub: S) => Promise<boolean>,
  ) {}

  get size(): number {
    return this.stale.size;
  }

  /** `now`: send its UN-command at once (false: it just failed, so at the next reconnect only). */
  add(sub: S, now = true): void {
    this.stale.set(sub.name, sub);
    if (now) void this.undo(sub);
  }

  /** After a reconnect, once the subscriptions ioredis re-sent are in effect. */
  async undoAll(): Promise<void> {
    for (const sub of [...this.stale.values()]) await this.undo(sub);
  }

  private async undo(sub: S): Promise<void> {
    const done = this.wanted(sub.name) || (await this.unsubscribe(sub).catch(() => false));
    if (done && this.stale.get(sub.name) === sub) this.stale.delete(sub.name);
  }
}
