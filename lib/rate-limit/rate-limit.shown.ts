import { kindOf } from '../common/option-checks.js';

/**
 * A value a caller gave, as an error message shows it: JSON where JSON can write it (strings quoted, as before), else
 * what it is. JSON.stringify alone throws on a BigInt (a Prisma or pg `int8` id used as a key) and on an object that
 * refers to itself, and that TypeError would replace the InvalidKeyError / InvalidOptionsError being built.
 */
export function shownValue(value: unknown): string {
  if (typeof value === 'number') return String(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'symbol') return value.toString();
  try {
    const json = JSON.stringify(value);
    if (json !== undefined) return json.length > 200 ? `${json.slice(0, 200)}…` : json;
  } catch {
    // a cycle, a BigInt inside, a toJSON that throws
  }
  return kindOf(value);
}
