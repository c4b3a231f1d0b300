import { ConfigurableModuleBuilder, type DynamicModule, type Provider } from '@nestjs/common';
import { DEFAULT_CONNECTION_NAME } from './connection/connection.options.js';
import { RedisConnections } from './connection/redis-connections.js';
import {
  notificationsGatewayImports,
  type NotificationsGatewayExtra,
} from './notifications/notifications.providers.js';
import { getRedisClientToken } from './redis-toolkit.constants.js';
import type { RedisToolkitOptions } from './redis-toolkit.options.js';

interface RedisToolkitExtras {
  isGlobal?: boolean;
  notificationsGateway?: NotificationsGatewayExtra;
  /**
   * forRootAsync: the names in `connections` whose raw client you inject with `getRedisClientToken(name)` (forRoot
   * provides one for every name itself). A name the factory's `connections` lacks fails the start.
   */
  connectionNames?: string[];
}

export const {
  ConfigurableModuleClass: RedisToolkitConfigurableModule,
  MODULE_OPTIONS_TOKEN: REDIS_TOOLKIT_MODULE_OPTIONS,
} = new ConfigurableModuleBuilder<RedisToolkitOptions>({ moduleName: 'RedisToolkit' })
  .setClassMethodName('forRoot')
  .setExtras<RedisToolkitExtras>(
    { isGlobal: true, notificationsGateway: false, connectionNames: undefined },
    (definition, extras) => {
      const toolkit: DynamicModule = { ...definition, global: extras.isGlobal };
      const gateway = notificationsGatewayImports(extras.notificationsGateway, extras.isGlobal ? undefined : toolkit);
      toolkit.imports = [...(definition.imports ?? []), ...gateway];
      // forRoot passes its options here too (extras and options in one object); forRootAsync only the extras.
      const clients = namedClientProviders(
        extras.connectionNames ?? namesIn((extras as RedisToolkitOptions).connections),
      );
      toolkit.providers = [...(definition.providers ?? []), ...clients];
      toolkit.exports = [...(definition.exports ?? []), ...clients.map((p) => p.provide)];
      return toolkit;
    },
  )
  .build();

function namesIn(connections: unknown): string[] {
  if (connections === null || typeof connections !== 'object' || Array.isArray(connections)) return [];
  return Object.keys(connections);
}

/** `getRedisClientToken(name)` → the client of that connection (an unknown name fails the start, naming it). */
function namedClientProviders(names: string[]): (Provider & { provide: string | symbol })[] {
  return [...new Set(names)]
    .filter((name) => name !== DEFAULT_CONNECTION_NAME)
    .map((name) => ({
      provide: getRedisClientToken(name),
      useFactory: (connections: RedisConnections) => connections.get(name).client,
      inject: [RedisConnections],
    }));
}
