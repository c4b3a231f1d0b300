import type { DynamicModule } from '@nestjs/common';
import { InvalidOptionsError } from '../common/errors.js';

/** The `notificationsGateway` extra of RedisToolkitModule: `true` or `{ namespace }`. */
export type NotificationsGatewayExtra = boolean | { namespace?: string };

/** The optional peers the gateway needs, as README's install line names them. */
const GATEWAY_PEERS = ['@nestjs/websockets', '@nestjs/platform-socket.io', 'socket.io'];
/** Those the gateway itself loads (@nestjs/platform-socket.io is Nest's default adapter, which Nest loads). */
const LOADED_PEERS = ['@nestjs/websockets', 'socket.io'];

/**
 * The gateway module, imported lazily: @nestjs/websockets and socket.io are optional peers, so they are loaded only
 * when the gateway is enabled. Nest awaits a Promise<DynamicModule> in `imports`. `toolkit` (the toolkit module when
 * it is not global) is imported back by the gateway module so that the gateway can inject the toolkit's providers.
 * A peer that is not installed fails the start with InvalidOptionsError naming the packages to install.
 */
export function notificationsGatewayImports(
  extra: NotificationsGatewayExtra | undefined,
  toolkit?: DynamicModule,
): Promise<DynamicModule>[] {
  if (!extra) return [];
  return [
    checkPeers()
      .then(() => import('./notifications.module.js'))
      .then((m) => m.NotificationsGatewayModule.register(extra === true ? {} : extra, toolkit)),
  ];
}

async function checkPeers(): Promise<void> {
  const loaded = await Promise.allSettled(LOADED_PEERS.map((peer) => import(peer)));
  const missing = LOADED_PEERS.filter((peer, i) => {
    const result = loaded[i];
    return result.status === 'rejected' && isNotFound(result.reason, peer);
  });
  if (missing.length > 0) {
    throw new InvalidOptionsError(
      `notificationsGateway needs the optional peers ${GATEWAY_PEERS.join(', ')} (missing: ${missing.join(', ')}). ` +
        `Install them: npm install ${GATEWAY_PEERS.join(' ')}`,
    );
  }
  const failed = loaded.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** Node's error for a package that is not installed (ESM: ERR_MODULE_NOT_FOUND; CommonJS: MODULE_NOT_FOUND). */
function isNotFound(err: unknown, peer: string): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  const message = err instanceof Error ? err.message : '';
  return (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && message.includes(`'${peer}'`);
}
