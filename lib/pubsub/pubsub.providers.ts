import type { DynamicModule, Provider } from '@nestjs/common';
import { PubSubService } from './pubsub.service.js';

export const PUBSUB_PROVIDERS: Provider[] = [PubSubService];
export const PUBSUB_EXPORTS = [PubSubService];

/** The `notificationsGateway` extra of RedisToolkitModule: `true` or `{ namespace }`. */
export type NotificationsGatewayExtra = boolean | { namespace?: string };

/**
 * The gateway module, imported lazily: @nestjs/websockets and socket.io are optional peers, so they are loaded only
 * when the gateway is enabled. Nest awaits a Promise<DynamicModule> in `imports`.
 */
export function notificationsGatewayImports(extra: NotificationsGatewayExtra | undefined): Promise<DynamicModule>[] {
  if (!extra) return [];
  return [
    import('./gateway/notifications-gateway.module.js').then((m) =>
      m.NotificationsGatewayModule.register(extra === true ? {} : extra),
    ),
  ];
}
