import { Cluster, type Redis } from 'ioredis';
import { mastersOf } from './cluster-masters.js';
import type { RedisClient } from './lua-script.js';

/** Keys per UNLINK and per SCAN page: large enough to be fast, small enough not to block Redis. */
export const BULK_BATCH = 500;

/** CRC16 (XMODEM) of each byte value, for hashSlot. */
const CRC16_TABLE = Uint16Array.from({ length: 256 }, (_, byte) => {
  let crc = byte << 8;
  for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  return crc;
});

/**
 * Redis Cluster's hash slot of a key: CRC16 (XMODEM) of the hash tag if there is one, else of the whole key. Called
 * for every batched call on a cluster, so it reads an ASCII key's chars directly (a table step per byte) and encodes
 * only a key with other characters as UTF-8.
 */
export function hashSlot(key: string): number {
  let hashed = key;
  const open = key.indexOf('{');
  if (open !== -1) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) hashed = key.slice(open + 1, close);
  }
  let crc = 0;
  for (let i = 0; i < hashed.length; i++) {
    const code = hashed.charCodeAt(i);
    if (code > 0x7f) return crc16Bytes(Buffer.from(hashed)) % 16_384;
    crc = ((crc << 8) & 0xffff) ^ CRC16_TABLE[((crc >> 8) ^ code) & 0xff];
  }
  return crc % 16_384;
}

function crc16Bytes(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) & 0xffff) ^ CRC16_TABLE[((crc >> 8) ^ byte) & 0xff];
  return crc;
}

/**
 * Every key matching `pattern` on every master (SCAN with COUNT, never KEYS), page by page. A key may be yielded
 * twice when the keyspace is rehashed during the scan; callers that delete are idempotent, so that is harmless.
 */
export async function* scanKeys(client: RedisClient, pattern: string, count = BULK_BATCH): AsyncGenerator<string[]> {
  for (const master of await mastersOf(client)) yield* scanNode(master, pattern, count);
}

async function* scanNode(node: Redis, pattern: string, count: number): AsyncGenerator<string[]> {
  let cursor = '0';
  do {
    const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', count);
    cursor = next;
    if (keys.length > 0) yield keys;
  } while (cursor !== '0');
}

/**
 * UNLINKs keys in batches of at most BULK_BATCH, each batch within one hash slot on a cluster (a multi-key command
 * must not cross slots). Returns how many keys existed.
 */
export async function unlinkMany(client: RedisClient, keys: Iterable<string>): Promise<number> {
  const groups = new Map<number, string[]>();
  for (const key of keys) {
    const slot = client instanceof Cluster ? hashSlot(key) : 0;
    let group = groups.get(slot);
    if (!group) groups.set(slot, (group = []));
    group.push(key);
  }
  const batches: string[][] = [];
  for (const group of groups.values()) {
    for (let i = 0; i < group.length; i += BULK_BATCH) batches.push(group.slice(i, i + BULK_BATCH));
  }
  const counts = await Promise.all(batches.map((batch) => client.unlink(...batch)));
  return counts.reduce((sum, n) => sum + n, 0);
}
