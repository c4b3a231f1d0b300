import {
  type ConfigurableModuleAsyncOptions,
  ConfigurableModuleBuilder,
  type DynamicModule,
  type Provider,
} from '@nestjs/common';
import { nearest, OptionProblems, type OptionShape, shownValue } from './common/option-checks.js';
import { DEFAULT_CONNECTION_NAME } from './connection/connection.options.js';
import { RedisConnections } from './connection/redis-connections.js';
import { TOOLKIT_OPTION_KEYS } from './redis-toolkit.option-keys.js';
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

/** The extras of forRoot and forRootAsync (Nest takes them out of the options the toolkit resolves). */
const EXTRA_KEYS = { isGlobal: true, notificationsGateway: true, connectionNames: true } satisfies OptionShape;
/** forRootAsync's own keys: Nest's async options and the extras (the toolkit's options come from the factory). */
const ASYNC_KEYS: OptionShape = {
  imports: true,
  inject: true,
  useFactory: true,
  useClass: true,
  useExisting: true,
  provideInjectionTokensFrom: true,
  ...EXTRA_KEYS,
};

const built = new ConfigurableModuleBuilder<RedisToolkitOptions>({ moduleName: 'RedisToolkit' })
  .setClassMethodName('forRoot')
  .setExtras<RedisToolkitExtras>(
    { isGlobal: true, notificationsGateway: false, connectionNames: undefined },
    (definition, extras) => {
      // isGlobal is true or false here (checkExtras); left out or undefined, the module is global.
      const global = extras.isGlobal !== false;
      const toolkit: DynamicModule = { ...definition, global };
      const gateway = notificationsGatewayImports(extras.notificationsGateway, global ? undefined : toolkit);
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

export const REDIS_TOOLKIT_MODULE_OPTIONS = built.MODULE_OPTIONS_TOKEN;

type ForRootOptions = RedisToolkitOptions & Partial<RedisToolkitExtras>;
type ForRootAsyncOptions = ConfigurableModuleAsyncOptions<RedisToolkitOptions> & Partial<RedisToolkitExtras>;

/**
 * Nest's configurable module with the options of forRoot and forRootAsync checked when they are called: Nest reads
 * the extras by name and never looks at forRootAsync's own keys, so `isGlobl: false` left the toolkit global,
 * `isGlobal: 'no'` made it global, `connectionNames: 'volatile'` was spread into letters and `useFactroy` failed
 * inside Nest naming neither. The toolkit's options themselves are checked at start (resolveToolkitOptions).
 */
export class RedisToolkitConfigurableModule extends built.ConfigurableModuleClass {
  static override forRoot(options: ForRootOptions): DynamicModule {
    const problems = new OptionProblems('RedisToolkitModule.forRoot');
    if (options === undefined) problems.add('options', 'are required (at least { connection })');
    else if (problems.object('options', options)) {
      checkExtras(options, problems);
      misspelledExtras(options, problems);
    }
    problems.throwIfAny();
    // biome-ignore lint/complexity/noThisInStatic: Nest's method makes the module of `this` (RedisToolkitModule)
    return super.forRoot(options);
  }

  static override forRootAsync(options: ForRootAsyncOptions): DynamicModule {
    const problems = new OptionProblems('RedisToolkitModule.forRootAsync');
    if (options === undefined) {
      problems.add('options', 'are required ({ useFactory, inject?, imports? }, or useClass / useExisting)');
    } else if (problems.object('options', options)) {
      problems.unknownKeys('', options, ASYNC_KEYS);
      checkAsyncSource(options, problems);
      checkExtras(options, problems);
    }
    problems.throwIfAny();
    // biome-ignore lint/complexity/noThisInStatic: Nest's method makes the module of `this` (RedisToolkitModule)
    return super.forRootAsync(options);
  }
}

/** One of useFactory, useClass, useExisting (Nest would use useFactory over the others without a word). */
function checkAsyncSource(options: ForRootAsyncOptions, problems: OptionProblems): void {
  const given = (['useFactory', 'useClass', 'useExisting'] as const).filter((key) => options[key] !== undefined);
  if (given.length === 0) problems.add('useFactory', 'is required (or useClass, or useExisting): none was given');
  if (given.length > 1) problems.add(given.join(' and '), 'cannot be given together: give one of them');
  for (const key of given) problems.func(key, options[key]);
  for (const key of ['imports', 'inject', 'provideInjectionTokensFrom'] as const) {
    const value = options[key];
    if (value !== undefined && !Array.isArray(value)) problems.add(key, `must be an array, got ${shownValue(value)}`);
  }
}

/**
 * A key of forRoot's that is neither an option nor an extra but close to an extra's name (`isGlobl`): refused here with
 * the name it is close to; the start's check (resolveToolkitOptions) knows only the options and would not suggest it.
 */
function misspelledExtras(options: object, problems: OptionProblems): void {
  for (const key of Object.keys(options)) {
    if (key in TOOLKIT_OPTION_KEYS || key in EXTRA_KEYS) continue;
    const near = nearest(key, Object.keys(EXTRA_KEYS));
    if (near !== undefined) problems.add(key, `is not a known option (did you mean ${near}?)`);
  }
}

/** isGlobal, connectionNames and a falsy notificationsGateway (a truthy one is checked where its module is made). */
function checkExtras(extras: Partial<RedisToolkitExtras>, problems: OptionProblems): void {
  problems.boolean('isGlobal', extras.isGlobal);
  const { connectionNames: names, notificationsGateway: gateway } = extras;
  if (names !== undefined && (!Array.isArray(names) || !names.every((n) => typeof n === 'string' && n !== ''))) {
    const got = Array.isArray(names) ? 'an array holding something else' : shownValue(names);
    problems.add('connectionNames', `must be an array of connection names (non-empty strings), got ${got}`);
  }
  if (!gateway && gateway !== undefined && gateway !== false) {
    problems.add('notificationsGateway', `must be true, false or { namespace: '/live' }, got ${shownValue(gateway)}`);
  }
}

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
