import type { Redis } from 'ioredis';

/** Every key of one server matching `match` (SCAN until the cursor comes back to 0). */
export async function scanAll(client: Redis, match = '*'): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, page] = await client.scan(cursor, 'MATCH', match, 'COUNT', 1000);
    cursor = next;
    found.push(...page);
  } while (cursor !== '0');
  return found;
}
