/**
 * Cluster failover: a private cluster of 3 masters with 1 replica each; a master is SIGKILLed while the toolkit's
 * client keeps working. Operations on the dead master's slots must resume once its replica has been promoted
 * (cluster-node-timeout is 2 s in the harness), data replicated before the kill must still be there, the other
 * masters' slots must keep working throughout, and nothing may surface as an unhandled rejection.
 */
import 'reflect-metadata';
import { Cluster } from 'ioredis';
import { RedisConnection } from '../../lib/advanced.js';
import { hashSlot } from '../../lib/common/bulk-keys.js';
import { startRedisCluster, type RedisClusterHandle } from '../support/redis-cluster.js';
import type { RedisServerHandle } from '../support/redis-server.js';
import { trackForCleanup } from '../support/private-servers.js';
import { rawCommand } from '../support/resp.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';
import { countUnhandledRejections, settleRejections } from '../support/unhandled.js';

const COMMAND_TIMEOUT = 500;
/** Failure detection (node timeout 2 s) + election + the client's slot refresh, on a busy 2-core machine. */
const RESUME_BOUND_MS = 15_000;
/**
 * The test's own setup and checks go through a harness client with a generous timeout, not the toolkit client under
 * test: on a busy machine 300 writes, a WAIT for the replicas or the final read-back may take longer than the
 * toolkit's 500 ms commandTimeout, and that is not what this test is about (it failed CI with "Command timed out"
 * in exactly those places). Only the probes during the failover measure the toolkit client.
 */
const HARNESS_TIMEOUT_MS = 20_000;

let cluster: RedisClusterHandle;

beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
}, 60_000);

afterAll(async () => {
  await closeToolkitApps();
  await cluster?.stop();
});

/** Slot ranges served by `node`, from CLUSTER SLOTS as that node sees them. */
async function slotsOf(node: RedisServerHandle): Promise<[number, number][]> {
  const reply = await rawCommand(node.port, ['CLUSTER', 'SLOTS']);
  const ranges: [number, number][] = [];
  for (const entry of Array.isArray(reply) ? reply : []) {
    if (!Array.isArray(entry)) continue;
    const [from, to, master] = entry;
    if (Array.isArray(master) && Number(master[1]) === node.port) ranges.push([Number(from), Number(to)]);
  }
  return ranges;
}

describe('cluster: a master killed with a replica present', () => {
  it('operations through the toolkit client resume after failover; replicated data survives; other slots never stop', async () => {
    const rejections = countUnhandledRejections();
    try {
      const app = await createToolkitApp({
        target: { cluster: cluster.startupNodes },
        commandTimeout: COMMAND_TIMEOUT,
        maxReconnectDelay: 500,
      });
      const client = app.get(RedisConnection).client as Cluster;
      const harness = trackForCleanup(
        new Cluster(cluster.startupNodes, { redisOptions: { commandTimeout: HARNESS_TIMEOUT_MS } }),
      );
      const keys = Array.from({ length: 300 }, (_, i) => `rtk:failover:${i}`);
      await Promise.all(keys.map((k, i) => harness.set(k, `v${i}`)));
      // Make sure every write reached the replicas before the kill (WAIT returns the number of replicas that acked).
      const acked = await Promise.all(harness.nodes('master').map((m) => m.call('WAIT', '1', '10000')));
      expect(acked.map(Number)).toEqual(harness.nodes('master').map(() => 1));
      // The toolkit client is up and sees the data before the fault.
      expect(await client.get(keys[0])).toBe('v0');

      const victim = cluster.masters[0];
      const ranges = await slotsOf(victim);
      const onVictim = (k: string): boolean => ranges.some(([a, b]) => hashSlot(k) >= a && hashSlot(k) <= b);
      const victimKeys = keys.filter(onVictim);
      const otherKeys = keys.filter((k) => !onVictim(k));
      expect(victimKeys.length).toBeGreaterThan(0);
      expect(otherKeys.length).toBeGreaterThan(0);

      await victim.kill();
      const killedAt = Date.now();
      let resumedAt: number | undefined;
      let otherFailures = 0;
      let otherTries = 0;
      let probe = 0;
      while (Date.now() - killedAt < RESUME_BOUND_MS) {
        const started = Date.now();
        // The other masters' slots: should keep working (a few failures while the client refreshes its slot map).
        otherTries++;
        const other = await client.get(otherKeys[probe % otherKeys.length]).catch(() => undefined);
        if (other === undefined) otherFailures++;
        // The victim's slots: fail (quickly) until the replica is promoted, then work.
        const k = victimKeys[probe % victimKeys.length];
        const ok = await client
          .set(`${k}:after`, 'x')
          .then(() => client.get(k))
          .then(
            (v) => v === `v${keys.indexOf(k)}`,
            () => false,
          );
        expect(Date.now() - started).toBeLessThan(COMMAND_TIMEOUT * 2 + 1_000); // every call settles, none hangs
        probe++;
        if (ok) {
          resumedAt = Date.now();
          break;
        }
        await sleep(100);
      }
      expect(resumedAt).toBeDefined();
      const resumeMs = (resumedAt ?? Infinity) - killedAt;
      process.stdout.write(
        `\ncluster failover: operations on the killed master's slots resumed after ${resumeMs} ms; ` +
          `${otherFailures}/${otherTries} probes of other slots failed meanwhile\n`,
      );
      expect(resumeMs).toBeLessThan(RESUME_BOUND_MS);
      // Other masters kept serving: most probes on their slots succeeded.
      expect(otherFailures).toBeLessThanOrEqual(Math.ceil(otherTries / 2));
      // Everything written (and replicated) before the kill is still there, on every slot.
      const values = await Promise.all(keys.map((k) => harness.get(k)));
      expect(values).toEqual(keys.map((_, i) => `v${i}`));
      await harness.del(...victimKeys.map((k) => `${k}:after`).slice(0, 1));
    } finally {
      await closeToolkitApps();
      await settleRejections();
      rejections.stop();
    }
    expect(rejections.reasons).toEqual([]);
  }, 60_000);
});
