/**
 * Well-formed Unicode checks. Redis stores bytes and we send UTF-8: a UTF-16 surrogate without its pair becomes
 * U+FFFD on the way (two different strings, one stored value), and Lua's cjson refuses the `\ud800` escape that
 * JSON.stringify writes for it, so a stored lone surrogate breaks every later script that decodes it.
 */

/** A UTF-16 surrogate without its pair. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Whether `text` holds a lone surrogate (String#isWellFormed, which the ES2022 typings do not know). */
export function hasLoneSurrogate(text: string): boolean {
  return LONE_SURROGATE.test(text);
}

/** Whether a string, or an object key, anywhere in `value` (plain objects and arrays, each walked once) has one. */
export function containsLoneSurrogate(value: unknown): boolean {
  return walk(value, new Set());
}

function walk(value: unknown, seen: Set<object>): boolean {
  if (typeof value === 'string') return LONE_SURROGATE.test(value);
  if (value === null || typeof value !== 'object' || seen.has(value)) return false;
  seen.add(value);
  if (Array.isArray(value)) return value.some((item) => walk(item, seen));
  for (const key of Object.keys(value)) {
    if (LONE_SURROGATE.test(key) || walk((value as Record<string, unknown>)[key], seen)) return true;
  }
  return false;
}
