import type { RequiredCommand } from './redis-permissions.js';

/** The channel on which Redis sends, over RESP2, the invalidations of a tracking connection's REDIRECT target. */
export const TRACKING_CHANNEL = '__redis__:invalidate';

/** What `cache.l1.invalidation: 'tracking'` sends (cache.tracking-master.ts): the redirect connection, the tracking. */
export function trackingCommands(feature: string, cachePrefix: string): RequiredCommand[] {
  return [
    { feature, args: ['client', 'id'] },
    { feature, args: ['subscribe', TRACKING_CHANNEL] },
    { feature, args: ['client', 'tracking', 'on', 'bcast', 'prefix', cachePrefix, 'noloop'] },
  ];
}

/** `CLIENT TRACKING`, `CLIENT ID`, `SUBSCRIBE __redis__:invalidate`; undefined for any other command. */
export function trackingCommandName([name, sub]: string[]): string | undefined {
  if (name === 'client') return `CLIENT ${sub.toUpperCase()}`;
  if (name === 'subscribe' && sub === TRACKING_CHANNEL) return `SUBSCRIBE ${TRACKING_CHANNEL}`;
  return undefined;
}

/** The ACL rule that grants one of them (`+client|tracking`); undefined for any other command. */
export function trackingRule([name, sub]: string[]): string | undefined {
  if (name === 'client') return `+client|${sub}`;
  if (name === 'subscribe' && sub === TRACKING_CHANNEL) return `+subscribe &${TRACKING_CHANNEL}`;
  return undefined;
}
