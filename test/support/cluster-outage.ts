/**
 * What the rate-limit specs that kill a cluster master share: where a key's counters live, bringing the killed master
 * back before the next test, and a controller deciding on two trackers in either order.
 */
import { Controller, type ExecutionContext, Get, type Type, UseGuards } from '@nestjs/common';
import { type RateLimitPolicy, type RateLimitService, RateLimitGuard, Throttle } from '../../lib/index.js';
import { hashSlot } from '../../lib/common/bulk-keys.js';
import { userFromHeader } from './rate-limit-http.js';
import type { RedisClusterHandle } from './redis-cluster.js';
import { rawCommand } from './resp.js';
import { waitFor } from './wait.js';

/** The port of the master owning `key`'s counters (their hash tag depends on the key alone), from CLUSTER SLOTS. */
export async function masterPortOf(cluster: RedisClusterHandle, rl: RateLimitService) {
  const slots = (await rawCommand(cluster.masters[0].port, ['CLUSTER', 'SLOTS'])) as [
    number,
    number,
    [string, number],
  ][];
  return (key: string): number | undefined => {
    const slot = hashSlot(rl.redisKey(key, 'any', 'sliding-window'));
    return slots.find(([from, to]) => slot >= from && slot <= to)?.[2][1];
  };
}

/** Restarts `cluster.masters[0]` if a test killed it, and waits until every master says cluster_state:ok again. */
export async function restoreKilledMaster(cluster: RedisClusterHandle): Promise<void> {
  const victim = cluster.masters[0];
  if (victim.isRunning()) return;
  await victim.restart();
  // a restarted master says cluster_state:fail for ~2 s; the next test's app would not connect meanwhile
  const ok = async () => {
    const infos = await Promise.all(cluster.masters.map((m) => rawCommand(m.port, ['CLUSTER', 'INFO'])));
    return infos.every((info) => /cluster_state:ok/.test(String(info)));
  };
  expect(await waitFor(ok, 10_000)).toBe(true);
}

const header = (name: string) => (ctx: ExecutionContext) =>
  String(ctx.switchToHttp().getRequest<{ headers: Record<string, string> }>().headers[name]);

/**
 * GET /<path>/user-first and /<path>/ip-first: `policy` for the tracker of X-User-Id ('user') and that of X-Ip ('ip'),
 * in either order, guarded by RateLimitGuard.
 */
export function twoTrackerController(path: string, policy: RateLimitPolicy): Type<unknown> {
  @Controller(path)
  @UseGuards(RateLimitGuard)
  class TwoTrackerController {
    @Get('user-first')
    @Throttle({ name: 'user', ...policy, key: userFromHeader }, { name: 'ip', ...policy, key: header('x-ip') })
    userFirst(): string {
      return 'ok';
    }

    @Get('ip-first')
    @Throttle({ name: 'ip', ...policy, key: header('x-ip') }, { name: 'user', ...policy, key: userFromHeader })
    ipFirst(): string {
      return 'ok';
    }
  }
  return TwoTrackerController;
}
