// The runtime fixture's cluster part (run by runtime-main.ts after its single-server checks): the same app shape on a
// real 3-master Redis Cluster started in this process, where ioredis's Cluster leans on what runtimes implement each
// their own way (net sockets to every master, the slot table read at connect, timers, sharded subscriber
// connections). A happy path only: no fault, and no MOVED or ASK answered by any master along it.
import { Controller, Get, Module, UseGuards } from '@nestjs/common';
import type { Cluster } from 'ioredis';
import {
  CacheService,
  LockService,
  PubSubService,
  RateLimitGuard,
  REDIS_CLIENT,
  RedisToolkitModule,
  SessionService,
  Throttle,
} from 'nestjs-redis-toolkit';
import { startRedisCluster } from 'nestjs-redis-toolkit/testing';
import { createApp } from './platform.js';

type Check = (name: string, ok: boolean, detail: unknown) => void;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

@Controller()
class ClusterController {
  @Get('cluster-limited')
  @UseGuards(RateLimitGuard)
  @Throttle({ limit: 2, ttl: 60_000 })
  limited() {
    return { ok: true };
  }
}

@Module({
  imports: [
    RedisToolkitModule.forRootAsync({
      useFactory: () => ({
        connection: { cluster: JSON.parse(process.env.REDIS_CLUSTER_NODES ?? '[]') },
        keyPrefix: 'fixture-cl:',
        session: { cookie: { secret: 'fixture-secret', secure: false } },
      }),
    }),
  ],
  controllers: [ClusterController],
})
class ClusterModule {}

/** One INFO section's `name:value` lines of every master, by master address. */
async function infoOfMasters(cluster: Cluster, section: string): Promise<Map<string, string>> {
  const masters = cluster.nodes('master');
  const infos = await Promise.all(masters.map((m) => m.info(section)));
  return new Map(masters.map((m, i) => [`${m.options.host}:${m.options.port}`, infos[i] ?? '']));
}

/** Calls of each command but INFO, and socket reads (INFO's own included), each master has had, by address. */
async function callsAndReads(cluster: Cluster): Promise<Map<string, { calls: Record<string, number>; reads: number }>> {
  const infos = await infoOfMasters(cluster, 'all');
  return new Map(
    [...infos].map(([node, info]) => {
      const calls: Record<string, number> = {};
      for (const [, command, n] of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm))
        if (command !== 'info') calls[command as string] = Number(n);
      return [node, { calls, reads: Number(/^total_reads_processed:(\d+)/m.exec(info)?.[1] ?? Number.NaN) }];
    }),
  );
}

/** MOVED and ASK error replies every master has sent (INFO errorstats, Redis 7). */
async function redirections(cluster: Cluster): Promise<number> {
  const infos = await infoOfMasters(cluster, 'errorstats');
  let count = 0;
  for (const info of infos.values())
    for (const m of info.matchAll(/^errorstat_(?:MOVED|ASK):count=(\d+)/gm)) count += Number(m[1]);
  return count;
}

/** Starts the cluster and an app on it, runs each check, stops both. */
export async function clusterChecks(check: Check, platform: string): Promise<void> {
  const name = (what: string) => `cluster (3 masters): ${what}`;
  const cluster = await startRedisCluster();
  process.env.REDIS_CLUSTER_NODES = JSON.stringify(cluster.startupNodes);
  let app: Awaited<ReturnType<typeof createApp>> | undefined;
  try {
    app = await createApp(ClusterModule);
    await app.listen(0, '127.0.0.1');
    const base = (await app.getUrl()).replace('[::1]', '127.0.0.1');
    const client = app.get<Cluster>(REDIS_CLIENT);
    const cache = app.get(CacheService);
    const masters = client.nodes('master').length;
    check(name("the app's client sees 3 masters (cluster.nodes('master'))"), masters === 3, masters);

    // cache: 30 keys over the slots of every master, read back by 30 gets in one turn: one corked pipeline of GETs
    // per master, so each master reads them in one go (total_reads_processed: 1; one more allowed for a stray command
    // such as ioredis's slot refresh). The same 30 gets awaited one by one took 10, 9 and 11 reads under Bun.
    const keys = Array.from({ length: 30 }, (_, i) => `many-${i}`);
    await Promise.all(keys.map((key, i) => cache.set(key, { i }, { ttl: 60_000 })));
    const before = await callsAndReads(client);
    const values = await Promise.all(keys.map((key) => cache.get(key)));
    const after = await callsAndReads(client);
    const perMaster = [...after].map(([node, n]) => {
      const was = before.get(node);
      const calls = Object.fromEntries(
        Object.entries(n.calls)
          .map(([command, count]) => [command, count - (was?.calls[command] ?? 0)] as const)
          .filter(([, count]) => count !== 0),
      );
      // INFO all counts its own read, once per master
      return { calls, reads: n.reads - (was?.reads ?? Number.NaN) - 1 };
    });
    const commands = (n: (typeof perMaster)[number]) => Object.values(n.calls).reduce((a, b) => a + b, 0);
    check(
      name('cache: 30 gets in one turn: every value, one command a key, on all 3 masters, one batch each'),
      values.every((v, i) => JSON.stringify(v) === JSON.stringify({ i })) &&
        perMaster.length === 3 &&
        perMaster.every((n) => commands(n) > 0 && n.reads >= 1 && n.reads <= 2) &&
        perMaster.reduce((a, n) => a + commands(n), 0) === keys.length,
      { values, perMaster },
    );

    let loads = 0;
    const loader = (i: number) => async () => {
      loads++;
      return `loaded-${i}`;
    };
    const first = await Promise.all(keys.map((k, i) => cache.getOrSet(`gos-${k}`, loader(i), { ttl: 60_000 })));
    const again = await Promise.all(keys.map((k, i) => cache.getOrSet(`gos-${k}`, loader(i), { ttl: 60_000 })));
    check(
      name('cache getOrSet of 30 keys at once, twice: each loader ran once, the second round all hits'),
      loads === keys.length && [...first, ...again].every((v, i) => v === `loaded-${i % keys.length}`),
      { loads, first, again },
    );

    const tagged = keys.slice(0, 10);
    for (const key of tagged) await cache.set(`tagged-${key}`, key, { ttl: 60_000, tags: ['cluster-tag'] });
    const tagHits = await cache.mget(tagged.map((k) => `tagged-${k}`));
    const removed = await cache.invalidateTags('cluster-tag');
    const tagAfter = await cache.mget(tagged.map((k) => `tagged-${k}`));
    check(
      name('cache invalidateTags: 10 tagged entries in many slots, all removed'),
      tagHits.every((v, i) => v === tagged[i]) && removed === 10 && tagAfter.every((v) => v === undefined),
      { tagHits, removed, tagAfter },
    );

    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await fetch(`${base}/cluster-limited`)).status);
    check(name(`rate-limit guard over HTTP (${platform}): 200, 200, 429`), statuses.join() === '200,200,429', statuses);

    const sessions = app.get(SessionService);
    const made = await sessions.create('alice', { cart: 3 });
    const read = await sessions.get(made.id);
    check(
      name('session created and read back'),
      read?.userId === 'alice' && JSON.stringify(read.data) === '{"cart":3}',
      read,
    );

    const locks = app.get(LockService);
    const tokens: number[] = [];
    for (let i = 0; i < 3; i++) {
      const lock = await locks.acquire('cluster-lock', { ttl: 5_000 });
      tokens.push(lock.fencingToken);
      await lock.release();
    }
    check(
      name('lock acquired 3 times: fencing tokens rising'),
      tokens.every((t, i) => Number.isInteger(t) && (i === 0 || t > (tokens[i - 1] ?? Number.POSITIVE_INFINITY))),
      tokens,
    );

    const pubsub = app.get(PubSubService);
    const received: unknown[] = [];
    const unsubscribe = await pubsub.subscribe('cluster-news', (payload) => {
      received.push(payload);
    });
    const receivers = await pubsub.publish('cluster-news', { hello: 'cluster' });
    for (let i = 0; i < 200 && received.length === 0; i++) await sleep(10);
    await unsubscribe();
    check(
      name('pub/sub (sharded, the cluster default): publish reaches the subscriber'),
      pubsub.isSharded && receivers === 1 && JSON.stringify(received) === '[{"hello":"cluster"}]',
      { sharded: pubsub.isSharded, receivers, received },
    );

    const redirected = await redirections(client);
    check(name('no MOVED or ASK answered by any master along the way'), redirected === 0, redirected);
  } finally {
    await app?.close();
    await cluster.stop();
  }
}
