/**
 * Property-based round trip of the default serializer: deserialize(serialize(v)) equals v for random nested values
 * with Dates, unicode (including astral characters and lone surrogates), numbers, null, arrays and objects.
 */
import fc from 'fast-check';
import { SerializationError } from '../../lib/index.js';
import { JsonSerializer } from '../../lib/advanced.js';

const DATE_TAG = '$rtk:date';
const serializer = new JsonSerializer();
const roundTrip = <T>(value: T): T => serializer.deserialize<T>(serializer.serialize(value));

/** A JSON number that survives JSON: finite, and 0 rather than -0 (JSON has no negative zero). */
const finite = fc.double({ noNaN: true, noDefaultInfinity: true }).map((n) => (Object.is(n, -0) ? 0 : n));
const text = fc.oneof(
  fc.string({ unit: 'grapheme' }),
  fc.string({ unit: 'binary' }),
  fc.string({ unit: 'binary-ascii' }),
);
const validDate = fc.date({ noInvalidDate: true, min: new Date(-8.64e15), max: new Date(8.64e15) });
/** Keys include our tag names (and look-alikes of them) on purpose: callers' data must never be taken for a tag. */
const objectKey = fc
  .oneof(
    text,
    fc.constantFrom(DATE_TAG, '$rtk:lit:', '$rtk:lit:$rtk:date', '$rtk:other'),
    text.map((t) => `$rtk:${t}`),
  )
  .filter((k) => k !== '__proto__');

const { value } = fc.letrec<{ value: unknown; leaf: unknown }>((tie) => ({
  leaf: fc.oneof(fc.constant(null), fc.boolean(), fc.integer(), finite, text, validDate),
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    tie('leaf'),
    fc.array(tie('value'), { maxLength: 5 }),
    fc.dictionary(objectKey, tie('value'), { maxKeys: 5 }),
  ),
}));

describe('JsonSerializer round trip (property)', () => {
  it('deserialize(serialize(v)) deep-equals v, Dates included, at any depth', () => {
    fc.assert(
      fc.property(value, (v) => {
        const back = roundTrip(v);
        expect(back).toEqual(v);
      }),
      { numRuns: 1000 },
    );
  });

  it('Dates come back as Date instances with the same instant, wherever they sit', () => {
    fc.assert(
      fc.property(validDate, fc.array(validDate, { maxLength: 4 }), (d, ds) => {
        const back = roundTrip({ at: d, list: ds, nested: { deeper: [{ d }] } });
        expect(back.at).toBeInstanceOf(Date);
        expect(back.at.getTime()).toBe(d.getTime());
        expect(back.list.map((x) => x.getTime())).toEqual(ds.map((x) => x.getTime()));
        expect(back.nested.deeper[0]?.d.getTime()).toBe(d.getTime());
      }),
      { numRuns: 300 },
    );
    const invalid = roundTrip({ d: new Date(NaN) });
    expect(invalid.d).toBeInstanceOf(Date);
    expect(Number.isNaN(invalid.d.getTime())).toBe(true);
  });

  it('unicode strings survive byte for byte (astral characters, lone surrogates, NUL, quotes, backslashes)', () => {
    fc.assert(
      fc.property(text, (s) => {
        expect(roundTrip(s)).toBe(s);
        expect(roundTrip({ [s === '__proto__' || s === DATE_TAG ? 'k' : s]: s })).toEqual({
          [s === '__proto__' || s === DATE_TAG ? 'k' : s]: s,
        });
      }),
      { numRuns: 1000 },
    );
    for (const s of ['\u0000', '\ud800', '\udfff', '😀', '"\\', '\u2028\u2029', 'é'.normalize('NFD')])
      expect(roundTrip(s)).toBe(s);
  });

  it('refuses what JSON would lose, with SerializationError: undefined, BigInt, circular structures', () => {
    fc.assert(
      fc.property(fc.bigInt(), (b) => {
        expect(() => serializer.serialize({ b })).toThrow(SerializationError);
      }),
      { numRuns: 100 },
    );
    expect(() => serializer.serialize(undefined)).toThrow(SerializationError);
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    expect(() => serializer.serialize(circular)).toThrow(SerializationError);
  });

  it('objects shaped like our tags round-trip as themselves, not as Dates', () => {
    for (const lookalike of [
      { [DATE_TAG]: '2020-01-01T00:00:00.000Z' },
      { [DATE_TAG]: null },
      { '$rtk:lit:$rtk:date': 'x' },
      { [DATE_TAG]: { [DATE_TAG]: '2020-01-01T00:00:00.000Z' } },
    ]) {
      expect(roundTrip(lookalike)).toEqual(lookalike);
    }
  });
});
