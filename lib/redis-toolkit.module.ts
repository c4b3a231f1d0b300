import { Module, type Provider } from '@nestjs/common';
import { DiscoveryModule, ModulesContainer } from '@nestjs/core';
import { InvalidOptionsError } from './common/errors.js';
import { KeyBuilder } from './common/keys.js';
import {
  CLOSE_CONNECTIONS,
  METHOD_INTERCEPTORS,
  MethodInterceptionExplorer,
  type MethodInterceptor,
} from './common/method-interception.js';
import { SERIALIZER } from './common/serializer.js';
import {
  CONNECTION_OPTIONS,
  DEFAULT_CONNECTION_NAME,
  type ResolvedConnectionOptions,
} from './connection/connection.options.js';
import { CONNECTION_FEATURES } from './connection/connection.validation.js';
import { RedisConnection } from './connection/redis-connection.js';
import { FEATURE_CONNECTION, RedisConnections } from './connection/redis-connections.js';
import { RedisPermissionsCheck } from './connection/redis-permissions.js';
import { RedisToolkitHealth } from './connection/redis-toolkit.health.js';
import { CACHE_OPTIONS } from './cache/cache.options.js';
import { CACHE_EXPORTS, CACHE_METHOD_INTERCEPTORS, CACHE_PROVIDERS } from './cache/cache.providers.js';
import { LOCK_OPTIONS } from './lock/lock.options.js';
import { LOCK_EXPORTS, LOCK_METHOD_INTERCEPTORS, LOCK_PROVIDERS } from './lock/lock.providers.js';
import { NOTIFICATIONS_GATEWAY_OPTIONS } from './notifications/notifications.options.js';
import { PUBSUB_OPTIONS } from './pubsub/pubsub.options.js';
import { PUBSUB_EXPORTS, PUBSUB_PROVIDERS } from './pubsub/pubsub.providers.js';
import { RATE_LIMIT_OPTIONS } from './rate-limit/rate-limit.options.js';
import { RATE_LIMIT_EXPORTS, RATE_LIMIT_PROVIDERS } from './rate-limit/rate-limit.providers.js';
import { SESSION_OPTIONS } from './session/session.options.js';
import { SESSION_EXPORTS, SESSION_PROVIDERS } from './session/session.providers.js';
import { REDIS_CLIENT, REDIS_TOOLKIT_OPTIONS } from './redis-toolkit.constants.js';
import { RedisToolkitConfigurableModule, REDIS_TOOLKIT_MODULE_OPTIONS } from './redis-toolkit.module-definition.js';
import { resolveToolkitOptions, type ResolvedRedisToolkitOptions } from './redis-toolkit.options-resolver.js';
import type { RedisToolkitOptions } from './redis-toolkit.options.js';

/** Each feature injects only its own slice of the resolved options (and the shared values it needs). */
const slice = <T>(provide: symbol | typeof KeyBuilder, pick: (o: ResolvedRedisToolkitOptions) => T) => ({
  provide,
  useFactory: pick,
  inject: [REDIS_TOOLKIT_OPTIONS],
});
const OPTION_SLICES = [
  slice(CONNECTION_OPTIONS, (o): ResolvedConnectionOptions => {
    const { connection, commandTimeout, connectTimeout, lazyConnect, maxReconnectDelay } = o;
    return {
      connection,
      name: DEFAULT_CONNECTION_NAME,
      commandTimeout,
      connectTimeout,
      lazyConnect,
      maxReconnectDelay,
    };
  }),
  slice(KeyBuilder, (o) => new KeyBuilder(o.keyPrefix)),
  slice(SERIALIZER, (o) => o.serializer),
  slice(CACHE_OPTIONS, (o) => o.cache),
  slice(RATE_LIMIT_OPTIONS, (o) => o.rateLimit),
  slice(SESSION_OPTIONS, (o) => o.session),
  slice(LOCK_OPTIONS, (o) => o.lock),
  slice(PUBSUB_OPTIONS, (o) => o.pubsub),
  slice(NOTIFICATIONS_GATEWAY_OPTIONS, (o) => o.notifications),
];

/** The named connections, and the one each feature runs on (FEATURE_CONNECTION.cache, ...). */
const CONNECTION_PROVIDERS: Provider[] = [
  {
    provide: RedisConnections,
    useFactory: (defaultConnection: RedisConnection, o: ResolvedRedisToolkitOptions) => {
      const { commandTimeout, connectTimeout, lazyConnect, maxReconnectDelay } = o;
      return new RedisConnections(defaultConnection, {
        connections: o.connections,
        featureConnections: o.featureConnections,
        timing: { commandTimeout, connectTimeout, lazyConnect, maxReconnectDelay },
      });
    },
    inject: [RedisConnection, REDIS_TOOLKIT_OPTIONS],
  },
  ...CONNECTION_FEATURES.map((feature) => ({
    provide: FEATURE_CONNECTION[feature],
    useFactory: (connections: RedisConnections) => connections.forFeature(feature),
    inject: [RedisConnections],
  })),
];

/**
 * Two global toolkits in one application (forRoot or forRootAsync imported twice, both with the default isGlobal)
 * started without a word: each opened its own connections and ran its own start-up checks, and which one a class got
 * injected depended on where it sat, so a feature module's cache could use other options (another prefix, another
 * server) than the app's. Refused before anything connects; a second toolkit meant for one part of the app is
 * imported with `isGlobal: false` there.
 */
function refuseSecondGlobalToolkit(modules: ModulesContainer): void {
  let globals = 0;
  for (const module of modules.values()) if (module.metatype === RedisToolkitModule && module.isGlobal) globals++;
  if (globals < 2) return;
  throw new InvalidOptionsError(
    `RedisToolkitModule is imported ${globals} times as a global module (forRoot / forRootAsync, isGlobal true by ` +
      'default) in this application: each would open its own connections, and which one a class gets injected ' +
      'would depend on where it sits. Import it once, in the root module (it is global: every module gets its ' +
      'services); a second toolkit meant for one part of the app takes isGlobal: false and is imported only there.',
  );
}

/**
 * `RedisToolkitModule.forRoot(options)` / `forRootAsync({ imports, inject, useFactory })`; global by default
 * (`isGlobal: false` to scope it). Options are validated once, here, before anything connects.
 */
@Module({
  imports: [DiscoveryModule],
  providers: [
    {
      provide: REDIS_TOOLKIT_OPTIONS,
      useFactory: (options: RedisToolkitOptions, modules: ModulesContainer) => {
        refuseSecondGlobalToolkit(modules);
        return resolveToolkitOptions(options);
      },
      inject: [REDIS_TOOLKIT_MODULE_OPTIONS, ModulesContainer],
    },
    RedisConnection,
    ...CONNECTION_PROVIDERS,
    { provide: REDIS_CLIENT, useFactory: (c: RedisConnection) => c.client, inject: [RedisConnection] },
    ...OPTION_SLICES,
    RedisToolkitHealth,
    {
      provide: RedisPermissionsCheck,
      useFactory: (connections: RedisConnections, o: ResolvedRedisToolkitOptions) =>
        new RedisPermissionsCheck(connections, {
          keyPrefix: o.keyPrefix,
          lazyConnect: o.lazyConnect,
          shardedPubSub: o.pubsub.cluster === 'sharded',
          cacheL1: o.cache.l1?.invalidation,
          pubsubDurable: o.pubsub.durable !== false,
        }),
      inject: [RedisConnections, REDIS_TOOLKIT_OPTIONS],
    },
    MethodInterceptionExplorer,
    {
      provide: CLOSE_CONNECTIONS,
      useFactory: (connections: RedisConnections) => () => connections.onApplicationShutdown(),
      inject: [RedisConnections],
    },
    {
      provide: METHOD_INTERCEPTORS,
      useFactory: (...interceptors: MethodInterceptor[]) => interceptors,
      inject: [...LOCK_METHOD_INTERCEPTORS, ...CACHE_METHOD_INTERCEPTORS],
    },
    ...PUBSUB_PROVIDERS,
    ...CACHE_PROVIDERS,
    ...RATE_LIMIT_PROVIDERS,
    ...SESSION_PROVIDERS,
    ...LOCK_PROVIDERS,
  ],
  exports: [
    REDIS_CLIENT,
    REDIS_TOOLKIT_OPTIONS,
    RedisConnection,
    RedisConnections,
    KeyBuilder,
    RedisToolkitHealth,
    ...OPTION_SLICES.map((p) => p.provide),
    ...PUBSUB_EXPORTS,
    ...CACHE_EXPORTS,
    ...RATE_LIMIT_EXPORTS,
    ...SESSION_EXPORTS,
    ...LOCK_EXPORTS,
  ],
})
export class RedisToolkitModule extends RedisToolkitConfigurableModule {}
