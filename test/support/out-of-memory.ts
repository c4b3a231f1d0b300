import { Redis } from 'ioredis';
import { trackForCleanup } from './private-servers.js';

const FILL_KEYS = 64;

/**
 * Puts a server out of memory under noeviction: 1 MB of filler keys (`oom-fill:<i>`), then `maxmemory` 512 KB under
 * what is used, so every write that may grow memory is refused (OOM) whatever the few KB the calls under test free or
 * allocate; a refused SET shows it took. Resolves to the undo: `maxmemory` lifted, the filler deleted (the server's
 * other keys stay).
 */
export async function fillUntilOom(port: number): Promise<() => Promise<void>> {
  const admin = trackForCleanup(new Redis(port, '127.0.0.1'));
  const filler = 'x'.repeat(16 * 1024);
  const keys = Array.from({ length: FILL_KEYS }, (_, i) => `oom-fill:${i}`);
  for (const key of keys) await admin.set(key, filler);
  const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1]);
  await admin.config('SET', 'maxmemory-policy', 'noeviction');
  await admin.config('SET', 'maxmemory', String(used - 512 * 1024));
  const refused = await admin.set('oom-fill:more', filler).then(
    () => 'stored',
    (e: unknown) => String((e as Error).message),
  );
  if (!refused.startsWith('OOM')) throw new Error(`the server still takes writes (${refused})`);
  return async () => {
    await admin.config('SET', 'maxmemory', '0');
    await admin.del(...keys);
  };
}

/** Runs `body` while the server is out of memory (fillUntilOom), then undoes it. */
export async function underOom(port: number, body: () => Promise<void>): Promise<void> {
  const undo = await fillUntilOom(port);
  try {
    await body();
  } finally {
    await undo();
  }
}
