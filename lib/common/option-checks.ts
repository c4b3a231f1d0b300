import { InvalidOptionsError } from './errors.js';
import { MAX_TIMER_MS } from './timeout.js';

/**
 * The longest duration (ms) any option or call accepts: 100 years. Redis refuses an expiry whose deadline overflows
 * (`ERR invalid expire time`, `ERR value is not an integer`), and the scripts compute in microseconds, exact in a
 * double only below 2^53 µs (285 years); a larger value is refused before any Redis call.
 */
export const MAX_DURATION_MS = 100 * 365 * 24 * 3_600_000;

/** A finite number of milliseconds, > 0 (>= 0 with allowZero), at most MAX_DURATION_MS. */
export function isDuration(value: unknown, allowZero = false): value is number {
  return (
    typeof value === 'number' &&
    Number.isFinite(value) &&
    (allowZero ? value >= 0 : value > 0) &&
    value <= MAX_DURATION_MS
  );
}

/** The error text for a value that is not a duration (`must be a positive number of milliseconds, got X`). */
export function durationProblem(value: unknown, allowZero = false): string {
  if (typeof value === 'number' && value > MAX_DURATION_MS)
    return `must be at most ${MAX_DURATION_MS} ms (100 years), got ${shownValue(value)}`;
  return `must be a ${allowZero ? 'non-negative' : 'positive'} number of milliseconds, got ${shownValue(value)}`;
}

/** The error text for a delay past what a Node timer keeps (`must be at most 2147483647 ms ...`). */
export function timerProblem(value: number): string {
  return (
    `must be at most ${MAX_TIMER_MS} ms (~24.8 days, the longest delay a Node timer keeps: a longer one fires ` +
    `after 1 ms), got ${shownValue(value)}`
  );
}

/**
 * Collects every problem in a set of options so one start-up error lists them all, each naming its option path
 * (`cache.defaultTtl must be a positive number of milliseconds, got -5`).
 */
export class OptionProblems {
  private readonly problems: string[] = [];

  /** `owner` names what the options belong to in the error (`Invalid RedisSessionStore options`). */
  constructor(private readonly owner = 'RedisToolkitModule') {}

  add(path: string, message: string): void {
    this.problems.push(`${path} ${message}`);
  }

  /**
   * Milliseconds: a finite number > 0 (or >= 0 with allowZero). Absent is fine; the caller applies the default.
   * `timer`: the value goes into a Node timer (ioredis's commandTimeout and connectTimeout), so it is at most
   * MAX_TIMER_MS: setTimeout fires a longer delay after 1 ms, and every call or start would fail at once.
   */
  duration(path: string, value: unknown, { allowZero = false, timer = false } = {}): void {
    if (value === undefined) return;
    if (!isDuration(value, allowZero)) this.add(path, durationProblem(value, allowZero));
    else if (timer && value > MAX_TIMER_MS) this.add(path, timerProblem(value));
  }

  integer(path: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): void {
    if (value === undefined) return;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      this.add(path, `must be an integer from ${min} to ${max}, got ${shownValue(value)}`);
    }
  }

  number(path: string, value: unknown, min: number, max: number): void {
    if (value === undefined) return;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
      this.add(path, `must be a number from ${min} to ${max}, got ${shownValue(value)}`);
    }
  }

  boolean(path: string, value: unknown): void {
    if (value !== undefined && typeof value !== 'boolean')
      this.add(path, `must be true or false, got ${shownValue(value)}`);
  }

  /** `secret`: the value is a password (or a url that may hold one): the error names its type, never the value. */
  string(path: string, value: unknown, { allowEmpty = false, secret = false } = {}): void {
    if (value === undefined) return;
    if (typeof value !== 'string' || (!allowEmpty && value.length === 0)) {
      this.add(
        path,
        `must be a ${allowEmpty ? '' : 'non-empty '}string, got ${secret ? kindOf(value) : shownValue(value)}`,
      );
    }
  }

  oneOf<T>(path: string, value: unknown, allowed: readonly T[]): void {
    if (value !== undefined && !allowed.includes(value as T)) {
      this.add(path, `must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${shownValue(value)}`);
    }
  }

  func(path: string, value: unknown): void {
    if (value !== undefined && typeof value !== 'function')
      this.add(path, `must be a function, got ${shownValue(value)}`);
  }

  object(path: string, value: unknown): boolean {
    if (value === undefined) return true;
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      this.add(path, `must be an object, got ${shownValue(value)}`);
      return false;
    }
    return true;
  }

  /**
   * Every key of `value` (at any depth `shape` describes) that is not a known option: a typo such as `commandTimout`
   * would otherwise be ignored in a JS config or a forRootAsync factory. Names the nearest known name when close.
   * An options object given as a class instance (a factory's `new ToolkitConfig()`) is checked like a plain one; the
   * values that are instances of their own (a client, a serializer, tls options) sit under keys marked `true`, which
   * are never looked into.
   */
  unknownKeys(path: string, value: unknown, shape: OptionShape): void {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return;
    const known = Object.keys(shape);
    for (const key of Object.keys(value)) {
      const at = path === '' ? key : `${path}.${key}`;
      const inner = shape[key];
      if (inner === undefined) {
        const near = nearest(key, known);
        this.add(
          at,
          `is not a known option${near ? ` (did you mean ${path === '' ? near : `${path}.${near}`}?)` : ''}`,
        );
      } else if (Array.isArray(inner)) {
        const items = (value as Record<string, unknown>)[key];
        if (Array.isArray(items))
          for (const [i, item] of items.entries()) this.unknownKeys(`${at}[${i}]`, item, inner[0]);
      } else if (inner !== true) {
        this.unknownKeys(at, (value as Record<string, unknown>)[key], inner);
      }
    }
  }

  throwIfAny(): void {
    if (this.problems.length === 0) return;
    throw new InvalidOptionsError(`Invalid ${this.owner} options:\n${this.problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

/**
 * A value a caller gave, as an error message shows it: JSON where JSON can write it (a long string or JSON cut short),
 * else what it is. JSON.stringify alone writes Infinity and NaN as null, and throws on a BigInt (a Prisma or pg `int8`
 * id used as a key) and on an object that refers to itself; that TypeError would replace the error being built.
 */
export function shownValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  if (typeof value === 'number') return String(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'symbol') return value.toString();
  if (Array.isArray(value)) return 'an array';
  try {
    const json = JSON.stringify(value);
    if (json !== undefined) return json.length > 200 ? `${json.slice(0, 200)}…` : json;
  } catch {
    // a cycle, a BigInt inside, a toJSON that throws
  }
  return kindOf(value);
}

/** An object whose prototype is Object.prototype or null (an object literal, `Object.create(null)`). */
export function isPlainObject(value: unknown): value is object {
  if (value === null || typeof value !== 'object') return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** What a value is, without the value (`a number`, `a Buffer`, `an object`): for options that hold a secret. */
export function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return value === '' ? 'an empty string' : 'a string';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') {
    const name: unknown = Object.getPrototypeOf(value)?.constructor?.name;
    return typeof name === 'string' && name !== '' && name !== 'Object' ? `a ${name}` : 'an object';
  }
  return typeof value === 'undefined' ? 'undefined' : `a ${typeof value}`;
}

/**
 * The option names one options object accepts: `true` for a value not looked into (a number, a function, a client,
 * node's tls options), the shape of a nested options object, checked the same way, or `[shape]` for an array of
 * such objects (`lock.quorum.nodes`), each entry checked against the shape.
 */
export interface OptionShape {
  [key: string]: true | OptionShape | [OptionShape];
}

/**
 * For the options of one call or one decorator (checked where they are given, not at start): throws
 * InvalidOptionsError for the first own key of `options` not in `known`, naming the nearest known one. An ignored
 * typo (`{ tag: [...] }`, `{ waitTimout }`) would otherwise change what the call does without a word. `where` names the
 * call (`cache.set`, `@Cacheable on Products.list`).
 */
export function refuseUnknown(options: object, known: ReadonlySet<string>, where: string): void {
  for (const key in options) {
    if (known.has(key) || !Object.hasOwn(options, key)) continue;
    const near = nearest(key, [...known]);
    const hint = near ? ` (did you mean ${near}?)` : '';
    throw new InvalidOptionsError(`${where}: ${key} is not a known option${hint}; known: ${[...known].join(', ')}`);
  }
}

/**
 * Peers' names of an option of ours that no edit distance reaches: someone coming from lru-cache or bentocache types
 * `maxSize` for the L1's `maxBytes` (where `maxSize` is not itself known there: session.maxSize is).
 */
const PEER_NAMES: ReadonlyMap<string, string> = new Map([['maxSize', 'maxBytes']]);

/**
 * The known name closest to `name` (a peer's name for it, PEER_NAMES; else edit distance at most a third of its
 * length, at least 2), if any.
 */
export function nearest(name: string, known: string[]): string | undefined {
  const peer = PEER_NAMES.get(name);
  if (peer !== undefined && known.includes(peer)) return peer;
  const limit = Math.max(2, Math.floor(name.length / 3));
  let best: string | undefined;
  let bestDistance = limit + 1;
  for (const k of known) {
    const d = editDistance(name.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

/** Edit distance where swapping two neighbours counts as one edit (`tsl` is 1 from `tls`, 2 from `url`). */
function editDistance(a: string, b: string): number {
  let beforePrevious: number[] = [];
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        current[j] = Math.min(current[j], beforePrevious[j - 2] + 1);
    }
    beforePrevious = previous;
    previous = current;
  }
  return previous[b.length];
}
