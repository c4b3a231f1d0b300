import { Handlers } from '../../lib/pubsub/pubsub.dispatch.js';
import type { MessageHandler } from '../../lib/pubsub/pubsub.types.js';

/**
 * The handler list of one subscription (the registration snapshot of guarantees.hostile.spec.ts, through Redis): a
 * delivery goes to the handlers registered when it started and still registered at their turn, without copying them
 * per message; a copy is made only by a write during a delivery.
 */
const named =
  (log: string[], name: string): MessageHandler =>
  () =>
    void log.push(name);
const setOf = (handlers: Handlers) => (handlers as unknown as { set: Set<MessageHandler> }).set;

describe('Handlers', () => {
  it('one added during a delivery gets the next one; one removed before its turn gets nothing more', () => {
    const log: string[] = [];
    const late = named(log, 'late');
    const second = named(log, 'second');
    const handlers = new Handlers(() => {
      log.push('first');
      if (log.length === 1) {
        handlers.add(late);
        expect(handlers.delete(second)).toBe(true);
      }
    });
    handlers.add(second);
    handlers.each((h) => h(undefined, 'c', { id: '1', ts: 0 }));
    expect(log).toEqual(['first']);
    handlers.each((h) => h(undefined, 'c', { id: '2', ts: 0 }));
    expect(log).toEqual(['first', 'first', 'late']);
    expect(handlers.size).toBe(2);
    expect(handlers.delete(second)).toBe(false);
  });

  it('a handler that removes itself and the one after it: neither is called again, the rest are', () => {
    const log: string[] = [];
    const handlers = new Handlers(named(log, 'a'));
    const c = named(log, 'c');
    const b: MessageHandler = () => {
      log.push('b');
      handlers.delete(b);
      handlers.delete(c);
    };
    handlers.add(b);
    handlers.add(c);
    handlers.add(named(log, 'd'));
    handlers.each((h) => h(undefined, 'c', { id: '1', ts: 0 }));
    handlers.each((h) => h(undefined, 'c', { id: '2', ts: 0 }));
    expect(log).toEqual(['a', 'b', 'd', 'a', 'd']);
  });

  it('nested deliveries each keep their own snapshot, and a write after them all changes the list in place', () => {
    const log: string[] = [];
    const added = named(log, 'added');
    let depth = 0;
    const handlers = new Handlers(() => {
      log.push(`outer${depth}`);
      if (depth > 0) return;
      depth++;
      handlers.add(added); // a copy: the delivery under way goes on over the list it started with
      handlers.each((h) => h(undefined, 'c', { id: 'inner', ts: 0 })); // sees `added`
      depth--;
    });
    handlers.each((h) => h(undefined, 'c', { id: 'outer', ts: 0 }));
    expect(log).toEqual(['outer0', 'outer1', 'added']);
    // Nothing is delivering now: writes and deliveries use the list as it is, with no copy.
    const list = setOf(handlers);
    handlers.add(named(log, 'x'));
    for (let i = 0; i < 100; i++) handlers.each(() => undefined);
    expect(handlers.delete(added)).toBe(true);
    expect(setOf(handlers)).toBe(list);
    expect(handlers.size).toBe(2);
  });

  it('copies once for several writes during one delivery, and a throwing call does not leave it copying forever', () => {
    const handlers = new Handlers(() => undefined);
    const before = setOf(handlers);
    let during: Set<MessageHandler> | undefined;
    handlers.each(() => {
      handlers.add(() => undefined);
      during = setOf(handlers);
      handlers.add(() => undefined);
      expect(setOf(handlers)).toBe(during);
    });
    expect(during).not.toBe(before);
    expect(handlers.size).toBe(3);
    expect(() =>
      handlers.each(() => {
        throw new Error('boom');
      }),
    ).toThrow('boom');
    const after = setOf(handlers);
    handlers.add(() => undefined);
    expect(setOf(handlers)).toBe(after);
  });
});
