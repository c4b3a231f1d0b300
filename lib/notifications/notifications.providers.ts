import type { DynamicModule } from '@nestjs/common';
import { MissingPeerError } from '../common/errors.js';
import { OptionProblems } from '../common/option-checks.js';
import { inWebpackBundle, isNotFound, missingPeersMessage } from '../common/optional-peers.js';
import { NOTIFICATIONS_OPTION_KEYS } from '../redis-toolkit.option-keys.js';

/** The `notificationsGateway` extra of RedisToolkitModule: `true` or `{ namespace }`. */
export type NotificationsGatewayExtra = boolean | { namespace?: string };

/** The optional peers the gateway needs, as README's install line names them. */
export const GATEWAY_PEERS = ['@nestjs/websockets', '@nestjs/platform-socket.io', 'socket.io'];
/** Those the gateway itself loads (@nestjs/platform-socket.io is Nest's default adapter, which Nest loads). */
const LOADED_PEERS = ['@nestjs/websockets', 'socket.io'];

/**
 * The gateway module, imported lazily: @nestjs/websockets and socket.io are optional peers, so they are loaded only
 * when the gateway is enabled. Nest awaits a Promise<DynamicModule> in `imports`. `toolkit` (the toolkit module when
 * it is not global) is imported back by the gateway module so that the gateway can inject the toolkit's providers.
 * A peer that is not installed fails the start with MissingPeerError naming the packages to install.
 */
export function notificationsGatewayImports(
  extra: NotificationsGatewayExtra | undefined,
  toolkit?: DynamicModule,
): Promise<DynamicModule>[] {
  if (!extra) return [];
  checkGatewayModuleOptions(extra, 'notificationsGateway', 'RedisToolkitModule');
  const gateway = importGatewayPeers()
    .then(() => import('./notifications.module.js'))
    .then((m) => m.NotificationsGatewayModule.register(extra === true ? {} : extra, toolkit));
  // Nest awaits `imports` only once its scan reaches this module, after the rejection for a missing peer: marked
  // handled here, else Node's unhandled-rejection exit ended the process before NestFactory.create rejected with it
  gateway.catch(() => undefined);
  return [gateway];
}

/**
 * Imports the peers the gateway loads: MissingPeerError for those not installed, else a peer's own import error. Not
 * common/optional-peers.ts's checkPeers (require.resolve, synchronous, as the subpaths' CommonJS gates need): here
 * the start can wait, and importing is what the gateway module is about to do.
 */
async function importGatewayPeers(): Promise<void> {
  if (inWebpackBundle()) return; // the gateway module's own imports of the peers were resolved when bundling
  const loaded = await Promise.allSettled(LOADED_PEERS.map((peer) => import(peer)));
  const missing = LOADED_PEERS.filter((peer, i) => {
    const result = loaded[i];
    return result.status === 'rejected' && isNotFound(result.reason, peer);
  });
  if (missing.length > 0) {
    // Nest loads the adapter package itself (and names it when it alone is missing); beside the others it is named
    // here too, so that the list is whole
    const adapter = GATEWAY_PEERS[1];
    const resolved = await import(adapter).then(
      () => true,
      (err: unknown) => !isNotFound(err, adapter),
    );
    if (!resolved) missing.push(adapter);
    const named = GATEWAY_PEERS.filter((peer) => missing.includes(peer));
    throw new MissingPeerError(missingPeersMessage('notificationsGateway', GATEWAY_PEERS, named));
  }
  const failed = loaded.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/**
 * The `notificationsGateway` extra (`path` 'notificationsGateway', `true` or `{ namespace }`) or the options of
 * NotificationsGatewayModule.register(): InvalidOptionsError at once for a key that is neither `namespace` nor a
 * (deprecated there) gateway option, and for a namespace that is not a non-empty string. A misspelled `namespase` was
 * taken for a gateway option: the gateway served /notifications with a deprecation warning about that key.
 */
export function checkGatewayModuleOptions(value: unknown, path: string, owner: string): void {
  const problems = new OptionProblems(owner);
  if (value === true || value === undefined) return;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    problems.add(path, `must be true or { namespace: '/live' }, got ${JSON.stringify(value) ?? typeof value}`);
  } else {
    problems.unknownKeys(path, value, { namespace: true, ...NOTIFICATIONS_OPTION_KEYS });
    const { namespace } = value as { namespace?: unknown };
    if (namespace !== undefined && (typeof namespace !== 'string' || namespace.replace(/^\//, '') === '')) {
      problems.add(`${path}.namespace`, "must be a Socket.IO namespace like '/live'");
    }
  }
  problems.throwIfAny();
}
