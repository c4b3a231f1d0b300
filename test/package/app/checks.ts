// What the fixture's entry points (main.ts, runtime-main.ts) share: one `ok - ...` / `not ok - ...` line per check,
// which run.mjs reads, and the exit once the checks ran.
import { platform } from './platform.js';

let failures = 0;

/** Prints one check's line, with what was got when it failed, and counts a failure. */
export function check(name: string, ok: boolean, detail: unknown): void {
  if (!ok) failures++;
  process.stdout.write(
    `${ok ? 'ok' : 'not ok'} - ${platform}: ${name}${ok ? '' : ` (got ${JSON.stringify(detail)})`}\n`,
  );
}

/** Runs `checks`, then exits: 0 when every check passed, 1 on a failed one or when `checks` threw (no boot). */
export function runChecks(checks: () => Promise<void>): void {
  checks().then(
    () => process.exit(failures === 0 ? 0 : 1),
    (err: unknown) => {
      process.stdout.write(
        `not ok - ${platform}: the app did not boot: ${err instanceof Error ? err.stack : String(err)}\n`,
      );
      process.exit(1);
    },
  );
}
