/** How a call ended: thrown synchronously, resolved, rejected, or still pending after the bound (a hang). */
export type Outcome =
  | { kind: 'sync'; error: unknown }
  | { kind: 'resolved'; value: unknown }
  | { kind: 'rejected'; error: unknown }
  | { kind: 'hang' };

/** Runs `call` and says how it ended; a promise still pending after `hangMs` is a hang (the hostile-argument specs). */
export async function settle(call: () => unknown, hangMs = 3_000): Promise<Outcome> {
  let result: unknown;
  try {
    result = call();
  } catch (error) {
    return { kind: 'sync', error };
  }
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<Outcome>((resolve) => {
    timer = setTimeout(() => resolve({ kind: 'hang' }), hangMs);
  });
  try {
    return await Promise.race([
      Promise.resolve(result).then(
        (value): Outcome => ({ kind: 'resolved', value }),
        (error): Outcome => ({ kind: 'rejected', error }),
      ),
      hang,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
