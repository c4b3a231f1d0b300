import { Module, type DynamicModule, type Provider, type Type } from '@nestjs/common';
import { WebSocketGateway } from '@nestjs/websockets';
import type { NotificationsGatewayOptions } from '../pubsub.options.js';
import { NOTIFICATIONS_GATEWAY_OVERRIDES, NotificationsGateway } from './notifications.gateway.js';

/** `namespace`, plus any gateway option; those given here win over `pubsub.gateway` of forRoot. */
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
  static register(options: NotificationsGatewayModuleOptions = {}): DynamicModule {
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
    return { module: NotificationsGatewayModule, providers, exports: [NotificationsGateway] };
  }
}
