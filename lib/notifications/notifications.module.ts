import { forwardRef, Module, type DynamicModule, type Provider, type Type } from '@nestjs/common';
import { WebSocketGateway } from '@nestjs/websockets';
import type { NotificationsGatewayOptions } from './notifications.options.js';
import { NOTIFICATIONS_GATEWAY_OVERRIDES, NotificationsGateway } from './notifications.gateway.js';
import { checkGatewayModuleOptions } from './notifications.providers.js';

/**
 * `namespace` (a module-level option: Socket.IO namespaces are class metadata fixed at start). The gateway itself is
 * configured with `pubsub.gateway` of RedisToolkitModule.forRoot / forRootAsync; the other fields here are deprecated
 * (they still win over `pubsub.gateway`, with a warning at start).
 */
export interface NotificationsGatewayModuleOptions extends NotificationsGatewayOptions {
  /** Socket.IO namespace. Default `/notifications`. */
  namespace?: string;
}

/**
 * Registers the NotificationsGateway. Loaded only when enabled (`notificationsGateway: true` in
 * RedisToolkitModule.forRoot / forRootAsync, or imported directly from `nestjs-redis-toolkit/notifications`), so apps
 * without @nestjs/websockets and socket.io never load them. Configure it with the `pubsub.gateway` options.
 */
@Module({})
export class NotificationsGatewayModule {
  /**
   * `toolkit`: the RedisToolkitModule definition that loads this module through its `notificationsGateway` extra,
   * imported back when it is not global so that the gateway can inject PubSubService and the gateway options.
   */
  static register(options: NotificationsGatewayModuleOptions = {}, toolkit?: DynamicModule): DynamicModule {
    checkGatewayModuleOptions(options, 'NotificationsGatewayModule.register()', 'NotificationsGatewayModule');
    const { namespace, ...overrides } = options;
    let gateway: Type<NotificationsGateway> = NotificationsGateway;
    if (namespace !== undefined && namespace !== '/notifications') {
      // The namespace is class metadata read when the app starts; a subclass carries another one.
      class NamespacedNotificationsGateway extends NotificationsGateway {}
      WebSocketGateway({ namespace })(NamespacedNotificationsGateway);
      gateway = NamespacedNotificationsGateway;
    }
    const providers: Provider[] = [gateway, { provide: NOTIFICATIONS_GATEWAY_OVERRIDES, useValue: overrides }];
    if (gateway !== NotificationsGateway) providers.push({ provide: NotificationsGateway, useExisting: gateway });
    return {
      module: NotificationsGatewayModule,
      ...(toolkit && { imports: [forwardRef(() => toolkit)] }),
      providers,
      exports: [NotificationsGateway],
    };
  }
}
