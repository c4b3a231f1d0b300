import { randomBytes } from 'node:crypto';
import { mergeFields, parseEnvelope, type SessionEnvelope } from '../../lib/session/session.envelope.js';
import { splicedJson } from '../../lib/session/session.splice.js';
import { stampedJson } from '../../lib/session/session.stamp.js';

// An update's JSON spliced from the value it merges into must read back as the merged session, exactly as the JSON
// stampedJson makes of it, and carry a fresh stamp as its last field.
const STAMP_TAIL = /,"v":"\/[A-Za-z0-9_-]{8}[0-9a-z]+"\}$/;
const texts = [
  '',
  'x',
  '"quoted"',
  '{"a":1}',
  '[1,"2"]',
  '\\',
  '\\"',
  '},"k":"',
  ',"v":"/x',
  '"d":{',
  'é😀',
  '\n',
  'null',
];
const pick = <T>(list: T[]): T => list[Math.floor(Math.random() * list.length)];
const value = (): string =>
  Math.random() < 0.5 ? pick(texts) : JSON.stringify(pick(texts) + randomBytes(2).toString('hex'));

function envelopeOf(d: Record<string, string>, k?: string): SessionEnvelope {
  return { u: pick(['', 'u1', '"quoted" user']), c: 1, m: 2e12, t: 60_000, d, ...(k === undefined ? {} : { k }) };
}

describe('splicedJson', () => {
  it('reads back as the merged session for random sessions and patches, field order kept', () => {
    let spliced = 0;
    for (let i = 0; i < 4_000; i++) {
      const names = ['a', 'b', 'views', 'k', 'v', 'd', '"q"', 'x,"y":', '1', 'é'];
      const d: Record<string, string> = {};
      for (const n of names) if (Math.random() < 0.5) d[n] = value();
      const before = envelopeOf(d, Math.random() < 0.5 ? JSON.stringify({ maxAge: 1, v: '},"k":"' }) : undefined);
      const current = stampedJson(before);
      const parsed = parseEnvelope(current)!;
      const sets: [string, string][] = [];
      const count = 1 + Math.floor(Math.random() * 3);
      for (let j = 0; j < count; j++) {
        const name = pick(names);
        if (!sets.some(([n]) => n === name)) sets.push([name, value()]);
      }
      const json = splicedJson(current, parsed, sets, []);
      const merged = mergeFields(parsed, sets, []);
      if (json === undefined) continue;
      spliced++;
      expect(json).toMatch(STAMP_TAIL);
      expect(parseEnvelope(json)).toEqual(merged);
      expect(Object.keys(JSON.parse(json).d)).toEqual(Object.keys(JSON.parse(stampedJson(merged)).d));
      // the same text as stampedJson's up to the stamp, but for a new integer-like name (JSON.stringify writes those
      // first, the splice at the end of d: JSON.parse reads both alike)
      const whole = stampedJson(merged);
      if (!sets.some(([n]) => n === '1' && !Object.hasOwn(parsed.d, n)))
        expect(json.slice(0, json.lastIndexOf(',"v":"/'))).toBe(whole.slice(0, whole.lastIndexOf(',"v":"/')));
    }
    expect(spliced).toBeGreaterThan(3_000);
  });

  it('leaves to stampedJson what it cannot splice', () => {
    const before = envelopeOf({ a: '1', b: '"x"' });
    const current = stampedJson(before);
    const parsed = parseEnvelope(current)!;
    expect(splicedJson(current, parsed, [['a', '2']], ['b'])).toBeUndefined(); // a delete
    expect(splicedJson(current, parsed, [['__proto__', '2']], [])).toBeUndefined();
    expect(
      splicedJson(
        current,
        parsed,
        [
          ['a', '2'],
          ['a', '3'],
        ],
        [],
      ),
    ).toBeUndefined(); // set twice
    expect(splicedJson(`${current}\n{"d":{"a":"5"}}`, parsed, [['a', '2']], [])).toBeUndefined(); // changes appended
    expect(splicedJson(JSON.stringify(before), parsed, [['a', '2']], [])).toBeUndefined(); // no stamp
    // a name twice in d (hand-written): JSON.parse keeps the last, so nothing is spliced
    const twice = `{"u":"","c":1,"m":2000000000000,"t":1,"d":{"a":"1","a":"1"},"v":"/abcdefgh1"}`;
    expect(splicedJson(twice, parseEnvelope(twice)!, [['a', '2']], [])).toBeUndefined();
    // another order of the fields (an earlier writer) is fine as long as d ends before k or the stamp
    const other = `{"c":1,"m":2000000000000,"u":"","t":1,"d":{"a":"1"},"k":"null","v":"/abcdefgh1"}`;
    const json = splicedJson(
      other,
      parseEnvelope(other)!,
      [
        ['a', '2'],
        ['n', '3'],
      ],
      [],
    )!;
    expect(parseEnvelope(json)).toEqual(
      mergeFields(
        parseEnvelope(other)!,
        [
          ['a', '2'],
          ['n', '3'],
        ],
        [],
      ),
    );
    // an empty d
    const empty = stampedJson(envelopeOf({}));
    expect(parseEnvelope(splicedJson(empty, parseEnvelope(empty)!, [['n', '1']], [])!)?.d).toEqual({ n: '1' });
  });
});
