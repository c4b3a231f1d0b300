/**
 * Property-based round trip of the default serializer: deserialize(serialize(v)) equals v for random nested values
 * with Dates, unicode (including astral characters and lone surrogates), numbers, null, arrays and objects; and the
 * plain-data fast path (no replacer) writes exactly what the replacer path writes.
 */
import fc from 'fast-check';
import { SerializationError } from '../../lib/index.js';
import { JsonSerializer } from '../../lib/advanced.js';
import { tagAwareJson } from '../../lib/common/serializer.js';

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

  describe('the fast path for plain data (JSON.stringify without the replacer)', () => {
    class Point {
      constructor(
        readonly x: number,
        readonly y: number,
      ) {}
    }
    /** Values the fast path must hand to the replacer: class instances, toJSON, prototype-less objects, Dates. */
    const { mixed } = fc.letrec<{ mixed: unknown }>((tie) => ({
      mixed: fc.oneof(
        { depthSize: 'small', withCrossShrink: true },
        value,
        fc.tuple(fc.integer(), fc.integer()).map(([x, y]) => new Point(x, y)),
        tie('mixed').map((inner) => ({ toJSON: () => inner })),
        fc.dictionary(objectKey, tie('mixed'), { maxKeys: 3 }).map((d) => Object.assign(Object.create(null), d)),
        fc.array(tie('mixed'), { maxLength: 4 }),
        fc.dictionary(objectKey, tie('mixed'), { maxKeys: 4 }),
      ),
    }));

    it('writes exactly the text of the replacer path, for any value', () => {
      fc.assert(
        fc.property(mixed, (v) => {
          if (v === null || typeof v !== 'object') return;
          expect(serializer.serialize(v)).toBe(tagAwareJson(v));
        }),
        { numRuns: 2000 },
      );
    });

    it('tags a Date and escapes a tag-shaped object past its depth and size bounds, and with a polluted prototype', () => {
      let deep: unknown = { at: new Date(0), tagLike: { [DATE_TAG]: 'x' } };
      for (let i = 0; i < 40; i++) deep = i % 2 === 0 ? { deeper: deep } : [deep];
      expect(serializer.serialize(deep)).toBe(tagAwareJson(deep as object));
      expect(roundTrip(deep)).toEqual(deep);

      const wide: { n?: number; at?: Date }[] = [
        ...Array.from({ length: 10_050 }, (_, n) => ({ n })),
        { at: new Date(0) },
      ];
      expect(roundTrip(wide)[10_050]?.at).toEqual(new Date(0));

      // an enumerable key inherited from Object.prototype is not an own key: { "$rtk:date": … } is still sole
      Object.defineProperty(Object.prototype, 'polluted', { value: 1, enumerable: true, configurable: true });
      try {
        const lookalike = { nested: { [DATE_TAG]: '2020-01-01T00:00:00.000Z' } };
        expect(serializer.serialize(lookalike)).toBe(tagAwareJson(lookalike));
        expect(serializer.serialize(lookalike)).toContain('$rtk:lit:');
      } finally {
        delete (Object.prototype as Record<string, unknown>).polluted;
      }
    });

    it('leaves a toJSON array, a Date without toJSON, a getter or a cycle to the replacer, which handles or refuses it', () => {
      const list = Object.assign([1, 2], { toJSON: () => ({ [DATE_TAG]: 'x' }) });
      expect(serializer.serialize({ list })).toBe(tagAwareJson({ list }));
      expect(serializer.serialize({ list })).toContain('$rtk:lit:');
      // a Date is a Date by its prototype, not by its toJSON
      const bare = { at: Object.assign(new Date(7), { toJSON: undefined }) };
      expect(serializer.serialize(bare)).toBe(`{"at":{"${DATE_TAG}":"1970-01-01T00:00:00.007Z"}}`);
      const withGetter = {
        get when() {
          return new Date(5);
        },
      };
      expect(roundTrip(withGetter)).toEqual({ when: new Date(5) });
      const cycle: unknown[] = [];
      cycle.push({ back: cycle });
      expect(() => serializer.serialize(cycle)).toThrow(/circular/i);
    });
  });
});
