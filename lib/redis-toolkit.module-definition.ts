import { ConfigurableModuleBuilder, type DynamicModule } from '@nestjs/common';
import {
  notificationsGatewayImports,
  type NotificationsGatewayExtra,
} from './notifications/notifications.providers.js';
import type { RedisToolkitOptions } from './redis-toolkit.options.js';

export const {
  ConfigurableModuleClass: RedisToolkitConfigurableModule,
  MODULE_OPTIONS_TOKEN: REDIS_TOOLKIT_MODULE_OPTIONS,
} = new ConfigurableModuleBuilder<RedisToolkitOptions>({ moduleName: 'RedisToolkit' })
  .setClassMethodName('forRoot')
  .setExtras<{ isGlobal?: boolean; notificationsGateway?: NotificationsGatewayExtra }>(
    { isGlobal: true, notificationsGateway: false },
    (definition, extras) => {
      const toolkit: DynamicModule = { ...definition, global: extras.isGlobal };
      const gateway = notificationsGatewayImports(extras.notificationsGateway, extras.isGlobal ? undefined : toolkit);
      toolkit.imports = [...(definition.imports ?? []), ...gateway];
      return toolkit;
    },
  )
  .build();
