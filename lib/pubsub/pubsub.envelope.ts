/** `rtk1:<id>:<ts>:<serialized payload>`: the envelope carries id and time without a second serialization pass. */
const ENVELOPE = 'rtk1:';

/** Wraps published messages in our envelope and reads it back; ids are unique per app instance. */
export class MessageEnvelopes {
  private readonly idPrefix = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}-`;
  private counter = 0;

  nextId(): string {
    this.counter = (this.counter + 1) % Number.MAX_SAFE_INTEGER;
    return this.idPrefix + this.counter.toString(36);
  }

  wrap(id: string, ts: number, body: string): string {
    return `${ENVELOPE}${id}:${ts}:${body}`;
  }

  /** Reads our envelope; a message from a foreign publisher (plain PUBLISH) is taken whole, with a local id. */
  open(message: string): { id: string; ts: number; body: string } {
    if (message.startsWith(ENVELOPE)) {
      const idEnd = message.indexOf(':', ENVELOPE.length);
      const tsEnd = idEnd < 0 ? -1 : message.indexOf(':', idEnd + 1);
      if (tsEnd > 0) {
        return {
          id: message.slice(ENVELOPE.length, idEnd),
          ts: Number(message.slice(idEnd + 1, tsEnd)),
          body: message.slice(tsEnd + 1),
        };
      }
    }
    return { id: this.nextId(), ts: Date.now(), body: message };
  }
}
