import type {
  DynamicModule,
  INestApplication,
  LoggerService,
  LogLevel,
  ModuleMetadata,
  Provider,
  Type,
} from '@nestjs/common';
import { Test, type TestingModule } from '@nestjs/testing';
import { RedisToolkitModule, type RedisToolkitOptions } from '../../lib/index.js';
import { sharedServers } from './shared-servers.js';

/** Where a test app's Redis is: the shared single server, the shared 3-master cluster, or an explicit connection. */
export type RedisTarget = 'single' | 'cluster' | RedisToolkitOptions['connection'];

export function connectionFor(target: RedisTarget): RedisToolkitOptions['connection'] {
  if (target === 'single') return { url: sharedServers().single.url };
  if (target === 'cluster') return { cluster: sharedServers().cluster };
  return target;
}

/** The HTTP platforms every HTTP feature is tested on: `describe.each(PLATFORMS)`. */
export const PLATFORMS = ['express', 'fastify'] as const;
export type Platform = (typeof PLATFORMS)[number];
/** Every HTTP platform on a single server and on a cluster, for `describe.each`: `[platform, target]`. */
export const PLATFORMS_AND_TARGETS = PLATFORMS.flatMap((platform) =>
  (['single', 'cluster'] as const).map((target) => [platform, target] as const),
);

export interface ToolkitAppOptions extends Omit<Partial<RedisToolkitOptions>, 'connection'> {
  target?: RedisTarget;
  /** Extra module metadata for the app under test (controllers, providers, imports). */
  imports?: ModuleMetadata['imports'];
  controllers?: Type<unknown>[];
  providers?: Provider[];
  /** Start an HTTP server so supertest can call it. Default: an application context without HTTP. */
  http?: boolean;
  /** The HTTP adapter (default: express). */
  platform?: Platform;
  /** Keep the Nest logger (default: errors only). */
  verbose?: boolean;
  /** A logger of the test's own (to see warnings); wins over `verbose`. */
  logger?: LoggerService;
  /** Runs after the app is created and before `app.init()` (e.g. to register a Fastify plugin). */
  beforeInit?: (app: INestApplication) => void | Promise<void>;
}

export interface ToolkitApp {
  readonly app: INestApplication;
  readonly moduleRef: TestingModule;
  get<T>(token: Type<T> | string | symbol): T;
  close(): Promise<void>;
}

const open = new Set<ToolkitApp>();

/**
 * Boots a Nest app with RedisToolkitModule on a harness Redis. Call `closeToolkitApps()` in afterEach/afterAll (or
 * `app.close()` yourself); every app still open is closed by `closeToolkitApps`.
 */
export async function createToolkitApp(options: ToolkitAppOptions = {}): Promise<ToolkitApp> {
  const {
    target = 'single',
    imports = [],
    controllers = [],
    providers = [],
    http = false,
    platform = 'express',
    verbose = false,
    logger: ownLogger,
    beforeInit,
    ...toolkit
  } = options;
  const toolkitModule: DynamicModule = RedisToolkitModule.forRoot({ ...toolkit, connection: connectionFor(target) });
  const moduleRef = await Test.createTestingModule({
    imports: [toolkitModule, ...imports],
    controllers,
    providers,
  }).compile();
  const logger: LoggerService | LogLevel[] | undefined = ownLogger ?? (verbose ? undefined : ['error']);
  // Fastify is loaded only by the tests that ask for it.
  const app =
    platform === 'fastify'
      ? moduleRef.createNestApplication(new (await import('@nestjs/platform-fastify')).FastifyAdapter(), { logger })
      : moduleRef.createNestApplication({ logger });
  await beforeInit?.(app);
  await app.init();
  if (http) await app.listen(0, '127.0.0.1');
  let closed = false;
  const handle: ToolkitApp = {
    app,
    moduleRef,
    get: <T>(token: Type<T> | string | symbol) => app.get<T>(token as Type<T>),
    close: async () => {
      if (closed) return;
      closed = true;
      open.delete(handle);
      await app.close();
    },
  };
  open.add(handle);
  return handle;
}

export async function closeToolkitApps(): Promise<void> {
  await Promise.all([...open].map((a) => a.close()));
}
