/** Helpers of the specs that run BullMQ beside the toolkit (test/foundation/beside-bullmq*.spec.ts). */
import type { Redis } from 'ioredis';
import { trackForCleanup } from './private-servers.js';

/** `CLIENT LIST` entries of the server `redis` is connected to, as field maps. */
export async function clientList(redis: Redis): Promise<Record<string, string>[]> {
  const list = String(await redis.client('LIST'));
  return list
    .trim()
    .split('\n')
    .map((line) =>
      Object.fromEntries(line.split(' ').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
    );
}

/** BullMQ logs its eviction-policy and maxRetriesPerRequest warnings with console.warn / console.error. */
export function bullConsole(): { warnings: string[]; errors: string[]; restore(): void } {
  const warnings: string[] = [];
  const errors: string[] = [];
  const { warn, error } = console;
  console.warn = (m: unknown) => void warnings.push(String(m));
  console.error = (m: unknown) => void errors.push(String(m));
  return {
    warnings,
    errors,
    restore: () => {
      console.warn = warn;
      console.error = error;
    },
  };
}

/** A BullMQ Queue / QueueEvents closed after the test. */
export const closing = <T extends { close(): Promise<void> }>(queue: T): T => {
  trackForCleanup({ stop: () => queue.close() });
  return queue;
};
