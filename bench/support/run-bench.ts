/**
 * Runs a benchmark's `main` as its process: exit 0 once it resolves (a peer's client or timer left open must not keep
 * the process alive), exit 1 with the stack when it throws.
 */
export function runBench(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
