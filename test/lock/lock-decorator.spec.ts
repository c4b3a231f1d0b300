import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Controller, Injectable, Param, Post } from '@nestjs/common';
import request from 'supertest';
import {
  InvalidKeyError,
  InvalidOptionsError,
  LockNotAcquiredError,
  LockService,
  RedisUnavailableError,
  WithLock,
} from '../../lib/index.js';
import { othersConnected } from '../support/clients.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisServer } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const RUN = randomUUID();
const log: string[] = [];
let running = 0;
let maxRunning = 0;
/**
 * The report job holds its lock until every concurrent caller has either run it or skipped it (`reportCalls` counts
 * both; `reportDone` opens at `reportCallers`): the others try while it holds, whatever the load, and nothing waits
 * on a fixed time.
 */
let reportCallers = 1;
let reportCalls = 0;
let reportDone: () => void = () => undefined;
let reportGate: Promise<void> = Promise.resolve();
const reportCalled = (): void => {
  if (++reportCalls >= reportCallers) reportDone();
};

@Injectable()
class ReportJob {
  @WithLock({ resource: `report:${RUN}`, onBusy: 'skip' })
  async generate(instance: number): Promise<string> {
    log.push(`report:${instance}`);
    reportCalled();
    await reportGate;
    return `report by ${instance}`;
  }

  @WithLock({ resource: `strict:${RUN}`, waitMs: 50 })
  async strict(): Promise<string> {
    await sleep(300);
    return 'strict';
  }

  @WithLock({ resource: (orderId: string) => `order:${RUN}:${orderId}`, ttl: 2_000, waitMs: 5_000 })
  async pay(orderId: string): Promise<string> {
    running++;
    maxRunning = Math.max(maxRunning, running);
    log.push(`pay:${orderId}`);
    await sleep(50);
    running--;
    return `paid ${orderId}`;
  }

  @WithLock({ resource: () => '' })
  async badResource(): Promise<void> {
    log.push('bad');
  }

  plain(): string {
    return 'plain';
  }
}

@Controller('orders')
class OrdersController {
  paid = 0;

  @Post(':id/pay')
  @WithLock({ resource: (id: string) => `http-order:${RUN}:${id}`, waitMs: 0 })
  async pay(@Param('id') id: string): Promise<{ id: string; paid: number }> {
    await sleep(200);
    this.paid++;
    return { id, paid: this.paid };
  }
}

beforeEach(() => {
  log.length = 0;
  running = 0;
  maxRunning = 0;
});

describe('@WithLock', () => {
  it("onBusy 'skip': 5 app instances call at the same time, the job runs once, the others return undefined", async () => {
    const apps = await Promise.all(Array.from({ length: 5 }, () => createToolkitApp({ providers: [ReportJob] })));
    reportCallers = 5;
    reportCalls = 0;
    reportGate = new Promise((open) => (reportDone = open));
    const results = await Promise.all(
      apps.map(async (app, i) => {
        const result = await app.get(ReportJob).generate(i);
        if (result === undefined) reportCalled(); // skipped while the job held the lock
        return result;
      }),
    );
    expect(log).toHaveLength(1);
    expect(results.filter((r) => r !== undefined)).toEqual([`report by ${log[0].split(':')[1]}`]);
    expect(results.filter((r) => r === undefined)).toHaveLength(4);
    // Released afterwards: the next run goes ahead.
    reportGate = Promise.resolve();
    expect(await apps[3].get(ReportJob).generate(3)).toBe('report by 3');
  });

  it("onBusy 'throw' (default): a busy lock throws LockNotAcquiredError after waitMs", async () => {
    const [a, b] = await Promise.all([
      createToolkitApp({ providers: [ReportJob] }),
      createToolkitApp({ providers: [ReportJob] }),
    ]);
    const first = a.get(ReportJob).strict();
    await sleep(30);
    await expect(b.get(ReportJob).strict()).rejects.toBeInstanceOf(LockNotAcquiredError);
    expect(await first).toBe('strict');
  });

  it('resource from the arguments: the same order is serialized, different orders run in parallel', async () => {
    const apps = await Promise.all(Array.from({ length: 3 }, () => createToolkitApp({ providers: [ReportJob] })));
    await Promise.all(Array.from({ length: 9 }, (_, i) => apps[i % 3].get(ReportJob).pay(`A${i % 3}`)));
    expect(log.filter((l) => l === 'pay:A0')).toHaveLength(3);
    expect(maxRunning).toBeGreaterThan(1); // A0, A1, A2 overlap
    expect(maxRunning).toBeLessThanOrEqual(3); // but each order one at a time
    const samePayments = await Promise.all(apps.map((app) => app.get(ReportJob).pay('B')));
    expect(samePayments).toEqual(['paid B', 'paid B', 'paid B']);
  });

  it('a resource function returning an invalid name rejects with InvalidKeyError without running the method', async () => {
    const app = await createToolkitApp({ providers: [ReportJob] });
    await expect(app.get(ReportJob).badResource()).rejects.toBeInstanceOf(InvalidKeyError);
    expect(log).toEqual([]);
    expect(app.get(ReportJob).plain()).toBe('plain');
  });

  it('works on controller handlers: concurrent double submits of one order are refused while it is paid', async () => {
    const app = await createToolkitApp({ controllers: [OrdersController], http: true });
    const server = app.app.getHttpServer();
    const [first, second] = await Promise.all([
      request(server).post('/orders/7/pay'),
      request(server).post('/orders/7/pay'),
    ]);
    const statuses = [first.status, second.status].sort();
    expect(statuses).toEqual([201, 409]); // LockNotAcquiredError carries 409 (c71bb48): Nest's default filter answers it
    expect(app.get(OrdersController).paid).toBe(1);
  });

  it('Redis down: the method does not run, RedisUnavailableError', async () => {
    const server = trackForCleanup(await startRedisServer());
    const app = await createToolkitApp({ target: { url: server.url }, commandTimeout: 300, providers: [ReportJob] });
    await server.kill();
    await expect(app.get(ReportJob).generate(1)).rejects.toBeInstanceOf(RedisUnavailableError);
    await expect(app.get(ReportJob).pay('X')).rejects.toBeInstanceOf(RedisUnavailableError);
    expect(log).toEqual([]);
  });

  it('rejects bad decorator options when the class is defined', () => {
    const define = (options: Parameters<typeof WithLock>[0]): void => {
      class Target {
        m(): void {}
      }
      WithLock(options)(Target.prototype, 'm', Object.getOwnPropertyDescriptor(Target.prototype, 'm')!);
    };
    expect(() => define({ resource: '' })).toThrow(InvalidOptionsError);
    expect(() => define({ resource: 'r', ttl: 0 })).toThrow(InvalidOptionsError);
    expect(() => define({ resource: 'r', onBusy: 'wait' as 'skip' })).toThrow(InvalidOptionsError);
    expect(() => define({ resource: 'r', waitMs: -1 })).toThrow(InvalidOptionsError);
  });

  it('without the module the method runs unlocked as written (no app, no interception)', async () => {
    // Two concurrent calls for the same order overlap: nothing serializes them without the module.
    const job = new ReportJob();
    expect(await Promise.all([job.pay('plain'), job.pay('plain')])).toEqual(['paid plain', 'paid plain']);
    expect(maxRunning).toBe(2);
    expect(log).toEqual(['pay:plain', 'pay:plain']);
    // The same class in an app with the module does serialize them (the contrast that makes the above meaningful).
    maxRunning = 0;
    const app = await createToolkitApp({ providers: [ReportJob] });
    await Promise.all([app.get(ReportJob).pay('plain'), app.get(ReportJob).pay('plain')]);
    expect(maxRunning).toBe(1);
    expect(app.get(LockService)).toBeInstanceOf(LockService);
  });
});

@Injectable()
class LongThreshold {
  @WithLock({ resource: `threshold-long:${RUN}`, extensionThreshold: 5_000 })
  async run(): Promise<string> {
    return 'ran';
  }
}

@Injectable()
class ShortThreshold {
  @WithLock({ resource: `threshold-short:${RUN}`, extensionThreshold: 500 })
  async run(): Promise<string> {
    return LockService.current() ? 'ran locked' : 'ran unlocked';
  }
}

const failure = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => undefined,
    (err: unknown) => err,
  );

// Without a ttl of its own, @WithLock's extensionThreshold was checked against lock.ttl only by each call (the call
// failed with 'using: extensionThreshold must be ...'), so an app whose every locked method would fail started.
describe('@WithLock without a ttl of its own: its extensionThreshold against lock.ttl at start', () => {
  it('a threshold not below lock.ttl (5000 of 1000) stops the start, naming the method; its connections close', async () => {
    const server = trackForCleanup(await startRedisServer());
    const err = await failure(
      createToolkitApp({ target: { url: server.url }, lock: { ttl: 1_000 }, providers: [LongThreshold] }),
    );
    expect(err).toBeInstanceOf(InvalidOptionsError);
    const message = (err as Error).message;
    expect(message).toContain('LongThreshold.run');
    expect(message).toContain('extensionThreshold must be a number of ms above 0 and below the ttl (1000), got 5000');
    expect(await waitFor(async () => (await othersConnected(server.port)) === 0, 5_000)).toBe(true);
  });

  it('a threshold below lock.ttl (500 of 1000) boots, and the method runs locked', async () => {
    const app = await createToolkitApp({ lock: { ttl: 1_000 }, providers: [ShortThreshold] });
    expect(await app.get(ShortThreshold).run()).toBe('ran locked');
  });
});
