import { Inject, Injectable, Logger, type OnModuleInit, Optional } from '@nestjs/common';
import { DiscoveryService, MetadataScanner } from '@nestjs/core';
import type { InstanceWrapper } from '@nestjs/core/injector/instance-wrapper.js';
import { InvalidOptionsError } from './errors.js';

/** Injection token: the list of MethodInterceptors (cache, lock, ...) the explorer applies. */
export const METHOD_INTERCEPTORS = Symbol('rtk:method-interceptors');
/** Injection token: closes every connection of the toolkit, when a decorator's options stop the start. */
export const CLOSE_CONNECTIONS = Symbol('rtk:close-connections');

const TRAMPOLINE = Symbol('rtk:trampoline');
const INVOKERS = Symbol('rtk:invokers');

type AnyMethod = (this: unknown, ...args: unknown[]) => unknown;
type Invoker = (instance: object, args: unknown[]) => unknown;

export interface InterceptedMethod {
  readonly instance: object;
  readonly className: string;
  readonly methodName: string;
}

/** Calls the next interceptor or, last, the original method with the same `this` and arguments. */
export type NextCall = () => Promise<unknown>;

/**
 * What a feature plugs into the explorer: the metadata key its decorator writes and how to run a method that carries
 * it. `prepare` runs once per decorated method at bootstrap (validate, precompute keys); the returned function runs
 * on every call.
 */
export interface MethodInterceptor<TMeta = unknown> {
  readonly metadataKey: string;
  readonly decoratorName: string;
  /** Lower runs outside higher: a lock (0) is taken before the cache (10) is consulted. */
  readonly order: number;
  prepare(target: InterceptedMethod, metadata: TMeta): (args: unknown[], next: NextCall) => Promise<unknown>;
}

/**
 * Builds a method decorator that records `metadata` under `metadataKey`.
 *
 * Besides the metadata it swaps the method for a thin trampoline. Nest binds controller handlers (and gateway
 * handlers) before any `onModuleInit` runs, so the explorer cannot swap methods later; and patching the prototype at
 * bootstrap would let two apps in one process (tests, workers) overwrite each other. The trampoline instead looks up
 * the invoker the explorer attached to *this instance*, and calls the original method when there is none (the
 * module is not imported, or the provider is request-scoped).
 */
export function createInterceptedMethodDecorator<TMeta>(
  metadataKey: string,
  decoratorName: string,
  metadata: TMeta,
  merge?: (previous: TMeta, next: TMeta) => TMeta,
): MethodDecorator {
  return (_target, propertyKey, descriptor) => {
    const original = descriptor.value as unknown;
    if (typeof original !== 'function') {
      throw new InvalidOptionsError(`${decoratorName} can only decorate methods (${String(propertyKey)} is not one)`);
    }
    const trampoline = isTrampoline(original) ? original : makeTrampoline(original as AnyMethod, propertyKey);
    const previous = Reflect.getOwnMetadata(metadataKey, trampoline) as TMeta | undefined;
    const value = previous !== undefined && merge ? merge(previous, metadata) : metadata;
    Reflect.defineMetadata(metadataKey, value, trampoline);
    (descriptor as TypedPropertyDescriptor<unknown>).value = trampoline;
    return descriptor;
  };
}

function isTrampoline(fn: unknown): fn is AnyMethod {
  return typeof fn === 'function' && TRAMPOLINE in fn;
}

function makeTrampoline(original: AnyMethod, propertyKey: string | symbol): AnyMethod {
  const trampoline = function (this: unknown, ...args: unknown[]): unknown {
    const invokers = (this as { [INVOKERS]?: Map<string | symbol, Invoker> } | undefined)?.[INVOKERS];
    const invoker = invokers?.get(propertyKey);
    return invoker ? invoker(this as object, args) : original.apply(this, args);
  };
  // Metadata written by decorators applied before ours (e.g. @Get below @Cacheable) moves to the trampoline.
  for (const key of Reflect.getOwnMetadataKeys(original)) {
    Reflect.defineMetadata(key, Reflect.getOwnMetadata(key, original), trampoline);
  }
  Object.defineProperty(trampoline, 'name', { value: original.name });
  Object.defineProperty(trampoline, TRAMPOLINE, { value: original });
  return trampoline;
}

/**
 * At bootstrap, finds every method of a static provider or controller that carries an interceptor's metadata and
 * attaches the composed interceptor chain to that instance (the shape of @nestjs/schedule's explorer).
 */
@Injectable()
export class MethodInterceptionExplorer implements OnModuleInit {
  private readonly logger = new Logger('RedisToolkit');

  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    @Inject(METHOD_INTERCEPTORS) private readonly interceptors: MethodInterceptor[],
    /** Closes every connection of the toolkit (the module passes RedisConnections'); absent: nothing to close. */
    @Optional() @Inject(CLOSE_CONNECTIONS) private readonly closeConnections?: () => Promise<void>,
  ) {}

  /**
   * A decorator's options that stop the start (an interceptor's `prepare` throws) fail the app's init, after which
   * Nest calls no shutdown hook: the toolkit's connections are closed here, or they keep retrying and the process
   * alive.
   */
  async onModuleInit(): Promise<void> {
    const ordered = [...this.interceptors].sort((a, b) => a.order - b.order);
    try {
      for (const wrapper of [...this.discovery.getProviders(), ...this.discovery.getControllers()]) {
        this.explore(wrapper, ordered);
      }
    } catch (err) {
      await this.closeConnections?.().catch(() => undefined);
      throw err;
    }
  }

  private explore(wrapper: InstanceWrapper, interceptors: MethodInterceptor[]): void {
    const instance: unknown = wrapper.instance;
    if (!instance || typeof instance !== 'object') return;
    const prototype = Object.getPrototypeOf(instance) as object | null;
    if (!prototype) return;
    for (const methodName of this.scanner.getAllMethodNames(prototype)) {
      const method = (prototype as Record<string, unknown>)[methodName];
      if (!isTrampoline(method)) continue;
      const className = wrapper.metatype?.name ?? instance.constructor.name;
      if (!wrapper.isDependencyTreeStatic()) {
        this.logger.warn(
          `${className}.${methodName} is request-scoped or depends on a request-scoped provider; ` +
            'its Redis toolkit decorators are not applied',
        );
        continue;
      }
      const steps = interceptors.flatMap((interceptor) => {
        const meta: unknown = Reflect.getMetadata(interceptor.metadataKey, method);
        return meta === undefined ? [] : [interceptor.prepare({ instance, className, methodName }, meta)];
      });
      if (steps.length > 0)
        attachInvoker(instance, methodName, method[TRAMPOLINE as keyof typeof method] as AnyMethod, steps);
    }
  }
}

function attachInvoker(
  instance: object,
  methodName: string,
  original: AnyMethod,
  steps: ((args: unknown[], next: NextCall) => Promise<unknown>)[],
): void {
  let invokers = (instance as { [INVOKERS]?: Map<string | symbol, Invoker> })[INVOKERS];
  if (!invokers) {
    invokers = new Map();
    Object.defineProperty(instance, INVOKERS, { value: invokers, enumerable: false });
  }
  invokers.set(methodName, (self, args) => {
    const call = (index: number): Promise<unknown> =>
      index === steps.length
        ? Promise.resolve().then(() => original.apply(self, args))
        : steps[index](args, () => call(index + 1));
    return call(0);
  });
}
