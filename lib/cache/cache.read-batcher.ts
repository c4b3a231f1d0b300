import type { RedisConnection } from '../connection/redis-connection.js';

interface PendingGet {
  key: string;
  resolve: (raw: string | null) => void;
  reject: (err: unknown) => void;
}

/**
 * GETs issued in the same tick go out as one MGET (single server only; a cluster spreads keys over slots): one
 * command and one socket write instead of many, like node-redis and ioredis's auto-pipelining do.
 */
export class CacheReadBatcher {
  private pendingGets: PendingGet[] | undefined;

  constructor(private readonly connection: RedisConnection) {}

  /** The raw string under `redisKey`: a plain GET on a cluster, else batched with this tick's other GETs. */
  get(redisKey: string): Promise<string | null> {
    return this.connection.isCluster ? this.connection.client.get(redisKey) : this.batchedGet(redisKey);
  }

  private batchedGet(redisKey: string): Promise<string | null> {
    return new Promise((resolve, reject) => {
      if (!this.pendingGets) {
        this.pendingGets = [];
        process.nextTick(() => this.flushGets());
      }
      this.pendingGets.push({ key: redisKey, resolve, reject });
    });
  }

  private flushGets(): void {
    const batch = this.pendingGets ?? [];
    this.pendingGets = undefined;
    if (batch.length === 1) {
      const [only] = batch;
      this.connection.client.get(only.key).then(only.resolve, only.reject);
      return;
    }
    const keys = [...new Set(batch.map((b) => b.key))];
    this.connection.client.mget(...keys).then(
      (values) => {
        const byKey = new Map(keys.map((k, i) => [k, values[i]]));
        for (const b of batch) b.resolve(byKey.get(b.key) ?? null);
      },
      (err: unknown) => {
        for (const b of batch) b.reject(err);
      },
    );
  }
}
