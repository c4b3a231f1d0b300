import type { SessionEnvelope } from '../../lib/session/session.envelope.js';
import { RecentValues } from '../../lib/session/session.recent-values.js';

// RecentValues keeps 1,000 sessions' values; a value kept again for a session keeps its place in the Map and is
// marked, and the eviction gives a marked one a second round (CLOCK) instead of evicting it. Pure: no Redis.
const envelope = (u: string): SessionEnvelope => ({ u, c: 1, m: 2, t: 3, d: {} });
const ids = (n: number, from = 0) => Array.from({ length: n }, (_, i) => `id-${from + i}`);

describe('RecentValues', () => {
  it('keeps 1,000 sessions; the one kept longest ago and not kept again since goes first', () => {
    const recent = new RecentValues();
    for (const id of ids(1_000)) recent.set(id, `{"u":"${id}"}`, envelope(id));
    recent.set('id-0', '{"u":"id-0","x":1}', envelope('id-0')); // kept again: renewed
    recent.set('id-1000', '{}', envelope('id-1000'));
    expect(recent.get('id-0')).toBe('{"u":"id-0","x":1}');
    expect(recent.get('id-1')).toBeUndefined();
    expect(recent.get('id-2')).toBe('{"u":"id-2"}');
    // id-0 had its second round (moved behind the others): 998 more new sessions push out id-2..id-999 first
    for (const id of ids(998, 1_001)) recent.set(id, '{}', envelope(id));
    expect(recent.get('id-0')).toBe('{"u":"id-0","x":1}');
    expect(ids(998, 2).filter((id) => recent.get(id) !== undefined)).toEqual([]);
    recent.set('id-1999', '{}', envelope('id-1999'));
    expect(recent.get('id-0')).toBeUndefined();
  });

  it('a read of the same text does not renew a session', () => {
    const recent = new RecentValues();
    const first = envelope('id-0');
    for (const id of ids(1_000)) recent.set(id, `{"u":"${id}"}`, id === 'id-0' ? first : envelope(id));
    recent.set('id-0', '{"u":"id-0"}', first);
    recent.set('id-1000', '{}', envelope('id-1000'));
    expect(recent.get('id-0')).toBeUndefined();
    expect(recent.get('id-1')).toBe('{"u":"id-1"}');
  });

  it('a value kept again in place replaces the parsed form and shape, and one too large forgets the session', () => {
    const recent = new RecentValues();
    recent.set('a', '{"u":"a"}', envelope('a'), [9, 0, 0]);
    const next = envelope('a2');
    recent.set('a', '{"u":"a2"}', next);
    expect(recent.envelopeOf('a', '{"u":"a2"}')).toBe(next);
    expect(recent.envelopeOf('a', '{"u":"a"}')).toBeUndefined();
    expect(recent.shapeOf('a')).toBeUndefined();
    recent.set('a', 'x'.repeat(64 * 1_024 + 1));
    expect(recent.get('a')).toBeUndefined();
  });

  it('keeps at most 4 Mi UTF-16 units of values, a session kept again in place included', () => {
    const recent = new RecentValues();
    const big = (c: string) => c.repeat(60 * 1_024);
    for (let i = 0; i < 70; i++) recent.set(`b${i}`, big('a'));
    const kept = () => Array.from({ length: 70 }, (_, i) => `b${i}`).filter((id) => recent.get(id) !== undefined);
    expect(kept().length).toBe(68); // 68 × 60 Ki units ≤ 4 Mi < 69 × 60 Ki
    expect(kept()[0]).toBe('b2');
    recent.set('small', 's'.repeat(4 * 1_024 * 1_024 - 68 * 60 * 1_024 - 100)); // 100 units left
    // b2 grows in place past the bound: the oldest not renewed goes (b3), not b2
    recent.set('b2', big('b') + 'x'.repeat(1_024));
    expect(recent.get('b2')?.startsWith('b')).toBe(true);
    expect(recent.get('b3') === undefined).toBe(true);
    expect(kept().length).toBe(67);
    expect(recent.get('small') === undefined).toBe(false);
  });
});
