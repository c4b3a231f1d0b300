/** The error `run` throws (synchronously or as a rejection), or undefined: for asserting on its class and message. */
export async function errorOf(run: () => unknown): Promise<unknown> {
  try {
    await run();
    return undefined;
  } catch (err) {
    return err;
  }
}
