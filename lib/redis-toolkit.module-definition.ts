import { ConfigurableModuleBuilder } from '@nestjs/common';
import { notificationsGatewayImports, type NotificationsGatewayExtra } from './pubsub/pubsub.providers.js';
import type { RedisToolkitOptions } from './redis-toolkit.options.js';

export const {
  ConfigurableModuleClass: RedisToolkitConfigurableModule,
  MODULE_OPTIONS_TOKEN: REDIS_TOOLKIT_MODULE_OPTIONS,
  OPTIONS_TYPE: REDIS_TOOLKIT_OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE: REDIS_TOOLKIT_ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<RedisToolkitOptions>({ moduleName: 'RedisToolkit' })
  .setClassMethodName('forRoot')
  .setExtras<{ isGlobal?: boolean; notificationsGateway?: NotificationsGatewayExtra }>(
    { isGlobal: true, notificationsGateway: false },
    (definition, extras) => ({
      ...definition,
      global: extras.isGlobal,
      imports: [...(definition.imports ?? []), ...notificationsGatewayImports(extras.notificationsGateway)],
    }),
  )
  .build();
