import type { DynamicModule } from '@nestjs/common';

/** The `notificationsGateway` extra of RedisToolkitModule: `true` or `{ namespace }`. */
export type NotificationsGatewayExtra = boolean | { namespace?: string };

/**
 * The gateway module, imported lazily: @nestjs/websockets and socket.io are optional peers, so they are loaded only
 * when the gateway is enabled. Nest awaits a Promise<DynamicModule> in `imports`. `toolkit` (the toolkit module when
 * it is not global) is imported back by the gateway module so that the gateway can inject the toolkit's providers.
 */
export function notificationsGatewayImports(
  extra: NotificationsGatewayExtra | undefined,
  toolkit?: DynamicModule,
): Promise<DynamicModule>[] {
  if (!extra) return [];
  return [
    import('./notifications.module.js').then((m) =>
      m.NotificationsGatewayModule.register(extra === true ? {} : extra, toolkit),
    ),
  ];
}
