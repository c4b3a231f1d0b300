import { InvalidOptionsError } from './errors.js';

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
    return `must be at most ${MAX_DURATION_MS} ms (100 years), got ${show(value)}`;
  return `must be a ${allowZero ? 'non-negative' : 'positive'} number of milliseconds, got ${show(value)}`;
}

/**
 * Collects every problem in a set of options so one start-up error lists them all, each naming its option path
 * (`cache.defaultTtl must be a positive number of milliseconds, got -5`).
 */
export class OptionProblems {
  private readonly problems: string[] = [];

  add(path: string, message: string): void {
    this.problems.push(`${path} ${message}`);
  }

  /** Milliseconds: a finite number > 0 (or >= 0 with allowZero). Absent is fine; the caller applies the default. */
  duration(path: string, value: unknown, { allowZero = false } = {}): void {
    if (value === undefined) return;
    if (!isDuration(value, allowZero)) this.add(path, durationProblem(value, allowZero));
  }

  integer(path: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): void {
    if (value === undefined) return;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      this.add(path, `must be an integer from ${min} to ${max}, got ${show(value)}`);
    }
  }

  number(path: string, value: unknown, min: number, max: number): void {
    if (value === undefined) return;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
      this.add(path, `must be a number from ${min} to ${max}, got ${show(value)}`);
    }
  }

  boolean(path: string, value: unknown): void {
    if (value !== undefined && typeof value !== 'boolean') this.add(path, `must be true or false, got ${show(value)}`);
  }

  string(path: string, value: unknown, { allowEmpty = false } = {}): void {
    if (value === undefined) return;
    if (typeof value !== 'string' || (!allowEmpty && value.length === 0)) {
      this.add(path, `must be a ${allowEmpty ? '' : 'non-empty '}string, got ${show(value)}`);
    }
  }

  oneOf<T>(path: string, value: unknown, allowed: readonly T[]): void {
    if (value !== undefined && !allowed.includes(value as T)) {
      this.add(path, `must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${show(value)}`);
    }
  }

  func(path: string, value: unknown): void {
    if (value !== undefined && typeof value !== 'function') this.add(path, `must be a function, got ${show(value)}`);
  }

  object(path: string, value: unknown): boolean {
    if (value === undefined) return true;
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      this.add(path, `must be an object, got ${show(value)}`);
      return false;
    }
    return true;
  }

  throwIfAny(): void {
    if (this.problems.length === 0) return;
    throw new InvalidOptionsError(
      `Invalid RedisToolkitModule options:\n${this.problems.map((p) => `  - ${p}`).join('\n')}`,
    );
  }
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return 'an array';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
