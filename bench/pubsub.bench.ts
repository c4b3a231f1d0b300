/**
 * `npm run bench:pubsub`: publish → Socket.IO client receipt latency (p50/p99) at 1k and 10k messages/s, and the
 * highest rate a client keeps receiving, for three relays on the same Redis, in one run:
 *   - nestjs-redis-toolkit: PubSubService.publish on one app, NotificationsGateway on another relaying to the client;
 *   - hand-written relay: an ioredis subscriber calling io.to(room).emit (the tutorial pattern), PUBLISH from ioredis;
 *   - @socket.io/redis-adapter: io.to(room).emit on a second Socket.IO server, delivered through the adapter.
 * The client runs in a worker thread (its own event loop); latency is measured on the absolute clock shared by both
 * threads. The three relays run interleaved in each round, so machine noise hits them alike.
 */
import 'reflect-metadata';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { Test } from '@nestjs/testing';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { Server } from 'socket.io';
import { Worker } from 'node:worker_threads';
import { PubSubService, RedisToolkitModule } from '../lib/index.js';
import { standaloneRedis } from './support/load-profile.js';
import { printTable, redisCpuPerOp, saveResults, withNote, type BenchRow } from './support/measure.js';
import { runBench } from './support/run-bench.js';

interface Relay {
  library: string;
  /** Sends one message carrying `sentAt` (performance.now()). */
  publish(sentAt: number): Promise<unknown>;
  client: RemoteClient;
  close(): Promise<void>;
}

/** A client running in a worker thread (bench/pubsub-client.worker.ts). */
class RemoteClient {
  private readonly counter = new Int32Array(new SharedArrayBuffer(4));
  private readonly worker: Worker;
  readonly ready: Promise<void>;

  constructor(url: string, auth: Record<string, unknown> = {}) {
    this.worker = new Worker(new URL('./pubsub-client.worker.js', import.meta.url), {
      workerData: { url, auth, channel: CHANNEL, counter: this.counter.buffer },
    });
    this.ready = new Promise((resolve, reject) => {
      this.worker.once('error', reject);
      this.worker.once('message', (m: { ok: boolean; error?: string }) =>
        m.ok ? resolve() : reject(new Error(m.error)),
      );
    });
  }

  /** Receipts so far. */
  get received(): number {
    return Atomics.load(this.counter, 0);
  }

  /** The latencies recorded since the last take(). */
  take(): Promise<number[]> {
    return new Promise((resolve) => {
      this.worker.once('message', (m: { latencies: number[] }) => resolve(m.latencies));
      this.worker.postMessage('take');
    });
  }

  async close(): Promise<void> {
    this.worker.postMessage('close');
    await new Promise((r) => setTimeout(r, 50));
    await this.worker.terminate();
  }
}

/** Absolute time in ms with sub-ms precision, comparable across threads. */
const now = (): number => performance.timeOrigin + performance.now();

const CHANNEL = 'bench';
// 1 s per measurement: with the peers run twice (auto-pipelining off and on) the bench stays within its budget
const RATE_SECONDS = 1;
const ROUNDS = 3;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * After sending: waits until the client has received `sent` messages since `base`, or nothing more arrived for
 * 100 ms, and at most 500 ms (the messages still in flight belong to this measurement, not to the next).
 */
async function settle(client: RemoteClient, base: number, sent: number): Promise<void> {
  const until = performance.now() + 500;
  let last = client.received;
  let lastChange = performance.now();
  while (client.received - base < sent && performance.now() < until && performance.now() - lastChange < 100) {
    await sleep(10);
    if (client.received !== last) {
      last = client.received;
      lastChange = performance.now();
    }
  }
}

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function clientFor(url: string): Promise<RemoteClient> {
  const client = new RemoteClient(url);
  await client.ready;
  return client;
}

function listen(server: HttpServer): Promise<string> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)),
  );
}

async function ours(url: string): Promise<Relay> {
  const options = {
    connection: { url },
    keyPrefix: 'bench-ps:',
    pubsub: {
      gateway: { authenticate: () => ({ id: 'bench' }), publicChannels: [CHANNEL], subscribeRateLimit: false as const },
    },
  };
  const gatewayModule = await Test.createTestingModule({
    imports: [RedisToolkitModule.forRoot({ ...options, notificationsGateway: true })],
  }).compile();
  const gatewayApp = gatewayModule.createNestApplication({ logger: ['error'] });
  await gatewayApp.listen(0, '127.0.0.1');
  const publisherModule = await Test.createTestingModule({ imports: [RedisToolkitModule.forRoot(options)] }).compile();
  const publisherApp = publisherModule.createNestApplication({ logger: ['error'] });
  await publisherApp.init();
  const pubsub = publisherApp.get(PubSubService);
  const { port } = gatewayApp.getHttpServer().address() as AddressInfo;
  const client = await clientFor(`http://127.0.0.1:${port}/notifications`);
  return {
    library: 'nestjs-redis-toolkit',
    publish: (sentAt) => pubsub.publish(CHANNEL, { sentAt }),
    client,
    close: async () => {
      await client.close();
      await gatewayApp.close();
      await publisherApp.close();
    },
  };
}

/** The peers run twice, on ioredis clients with auto-pipelining off (the default) and on; the better run is kept. */
const PIPED = ', auto-pipelining';

async function handWritten(url: string, piped = false): Promise<Relay> {
  const http = createServer();
  const io = new Server(http);
  const sub = new Redis(url);
  const pub = new Redis(url, { enableAutoPipelining: piped });
  await sub.subscribe(CHANNEL);
  sub.on('message', (channel: string, message: string) => {
    io.to(channel).emit('notification', { channel, data: JSON.parse(message) as unknown });
  });
  io.on('connection', (socket) => {
    socket.on('subscribe', (body: { channel: string }, ack: (a: { ok: boolean }) => void) => {
      void socket.join(body.channel);
      ack({ ok: true });
    });
  });
  const client = await clientFor(await listen(http));
  return {
    library: `hand-written ioredis relay${piped ? PIPED : ''}`,
    publish: (sentAt) => pub.publish(CHANNEL, JSON.stringify({ sentAt })),
    client,
    close: async () => {
      await client.close();
      io.close();
      sub.disconnect();
      pub.disconnect();
    },
  };
}

async function redisAdapter(url: string, piped = false): Promise<Relay> {
  const clients = [0, 1, 2, 3].map(() => new Redis(url, { enableAutoPipelining: piped }));
  const http = createServer();
  const receiving = new Server(http, { adapter: createAdapter(clients[0], clients[1], { key: 'bench-adapter' }) });
  receiving.on('connection', (socket) => {
    socket.on('subscribe', (body: { channel: string }, ack: (a: { ok: boolean }) => void) => {
      void socket.join(body.channel);
      ack({ ok: true });
    });
  });
  // The publishing side: another Socket.IO server (no clients of its own) on the same adapter channel.
  const sending = new Server({ adapter: createAdapter(clients[2], clients[3], { key: 'bench-adapter' }) });
  const client = await clientFor(await listen(http));
  await sleep(200);
  return {
    library: `@socket.io/redis-adapter${piped ? PIPED : ''}`,
    publish: async (sentAt) => sending.to(CHANNEL).emit('notification', { channel: CHANNEL, data: { sentAt } }),
    client,
    close: async () => {
      await client.close();
      receiving.close();
      await sending.of('/').adapter.close();
      for (const c of clients) c.disconnect();
    },
  };
}

/** Sends at `rate` messages/s for RATE_SECONDS, paced every millisecond, and records each receipt latency. */
async function atRate(
  relay: Relay,
  rate: number,
): Promise<{ p50: number; p99: number; received: number; sent: number; errors: number }> {
  await relay.client.take();
  const base = relay.client.received;
  let sent = 0;
  let errors = 0;
  const started = performance.now();
  while (performance.now() - started < RATE_SECONDS * 1000) {
    // Catch up to the schedule: as many messages as the elapsed time calls for (timers fire late under load).
    const due = Math.floor(((performance.now() - started) / 1000) * rate);
    while (sent < due) {
      sent++;
      relay.publish(now()).catch(() => errors++);
    }
    await sleep(1);
  }
  await settle(relay.client, base, sent);
  const sorted = (await relay.client.take()).sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), received: sorted.length, sent, errors };
}

/** Publishes as fast as the relay accepts (1,000 in flight at most) and counts what the client receives per second. */
async function maxRate(
  relay: Relay,
): Promise<{ perSecond: number; p50: number; p99: number; sent: number; errors: number }> {
  await relay.client.take();
  const base = relay.client.received;
  let inFlight = 0;
  let sent = 0;
  let errors = 0;
  const started = performance.now();
  const deadline = started + RATE_SECONDS * 1000;
  while (performance.now() < deadline) {
    // Do not outrun the client by more than 2,000 messages: a sustained rate is one the client keeps up with.
    while (inFlight < 1_000 && sent - (relay.client.received - base) < 2_000 && performance.now() < deadline) {
      inFlight++;
      sent++;
      relay
        .publish(now())
        .catch(() => errors++)
        .finally(() => inFlight--);
    }
    await sleep(1);
  }
  const elapsed = (performance.now() - started) / 1000;
  const received = relay.client.received - base;
  await settle(relay.client, base, sent);
  const sorted = (await relay.client.take()).sort((a, b) => a - b);
  return { perSecond: received / elapsed, p50: percentile(sorted, 50), p99: percentile(sorted, 99), sent, errors };
}

async function main(): Promise<void> {
  const redis = await standaloneRedis();
  const url = redis.url;
  const only = process.env.BENCH_PUBSUB_ONLY;
  const relays: Relay[] = [];
  const makers: [string, () => Promise<Relay>][] = [
    ['ours', () => ours(url)],
    ['handWritten', () => handWritten(url)],
    ['handWritten', () => handWritten(url, true)],
    ['redisAdapter', () => redisAdapter(url)],
    ['redisAdapter', () => redisAdapter(url, true)],
  ];
  for (const [, make] of makers.filter(([name]) => !only || name === only)) relays.push(await make());
  // Warm every code path (socket.io parser, ioredis, our relay) before measuring, then interleave the peers in each
  // round so machine noise and JIT warm-up hit them alike; the median round is reported.
  for (const relay of relays) await atRate(relay, 2_000);
  type Figures = {
    perSecond: number;
    p50: number;
    p99: number;
    errors: number;
    notes: string;
    redisCpuUsPerOp?: number;
  };
  const results = new Map<string, Figures[]>();
  const record = (library: string, operation: string, f: Figures) => {
    const key = `${library}\u0000${operation}`;
    results.set(key, [...(results.get(key) ?? []), f]);
  };
  for (let round = 0; round < ROUNDS; round++) {
    for (const relay of relays) {
      for (const rate of [1_000, 10_000]) {
        let r!: Awaited<ReturnType<typeof atRate>>;
        const redisCpuUsPerOp = await redisCpuPerOp(async () => (r = await atRate(relay, rate)).received);
        record(relay.library, `publish → client at ${rate / 1000}k msg/s`, {
          perSecond: r.received / RATE_SECONDS,
          p50: r.p50,
          p99: r.p99,
          errors: r.errors,
          notes: `${r.received}/${r.sent} received`,
          redisCpuUsPerOp,
        });
      }
      let m!: Awaited<ReturnType<typeof maxRate>>;
      const redisCpuUsPerOp = await redisCpuPerOp(async () => {
        m = await maxRate(relay);
        return (m.perSecond * RATE_SECONDS) | 0;
      });
      record(relay.library, 'max sustained msg/s', {
        perSecond: m.perSecond,
        p50: m.p50,
        p99: m.p99,
        errors: m.errors,
        notes: `${m.sent} sent`,
        redisCpuUsPerOp,
      });
    }
  }
  await sleep(500); // the last publishes answered before the clients go (the adapter does not catch a failed one)
  for (const relay of relays) await relay.close();
  const allRows: BenchRow[] = [...results].map(([key, figures]) => {
    const [library, operation] = key.split('\u0000');
    const pick = (get: (f: Figures) => number) =>
      figures.map(get).sort((a, b) => a - b)[Math.floor(figures.length / 2)];
    const cpu = figures.map((f) => f.redisCpuUsPerOp).filter((v): v is number => v !== undefined);
    return {
      feature: 'pubsub',
      library,
      operation,
      opsPerSec: pick((f) => f.perSecond),
      p50Ms: pick((f) => f.p50),
      p99Ms: pick((f) => f.p99),
      errors: figures.reduce((n, f) => n + f.errors, 0),
      notes: figures.map((f) => f.notes).join('; '),
      ...(cpu.length > 0 && { redisCpuUsPerOp: cpu.sort((a, b) => a - b)[Math.floor(cpu.length / 2)] }),
    };
  });
  // Each peer keeps the run (auto-pipelining off or on) with the better max sustained rate, for all its rows.
  const maxOf = (library: string) =>
    allRows.find((r) => r.library === library && r.operation === 'max sustained msg/s')?.opsPerSec ?? 0;
  const rows: BenchRow[] = [];
  for (const r of allRows) {
    if (r.library.endsWith(PIPED)) continue;
    const piped = `${r.library}${PIPED}`;
    if (!allRows.some((x) => x.library === piped)) {
      rows.push(r);
      continue;
    }
    const onWins = maxOf(piped) > maxOf(r.library);
    const kept = onWins ? allRows.find((x) => x.library === piped && x.operation === r.operation)! : r;
    const note = `ioredis auto-pipelining ${onWins ? 'on' : 'off'} (better max sustained rate of two runs; ${onWins ? 'off' : 'on'}: ${Math.round(maxOf(onWins ? r.library : piped)).toLocaleString('en-US')} msg/s)`;
    rows.push({ ...kept, library: r.library, notes: withNote(kept.notes, note) });
  }
  const table = printTable('Pub/Sub → Socket.IO client (1 client in a worker thread, loopback)', rows);
  saveResults('pubsub', rows, { table });
  await redis.stop();
  process.exit(0);
}

runBench(main);
