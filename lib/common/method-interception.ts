import { Inject, Injectable, Logger, type OnModuleDestroy, type OnModuleInit, Optional } from '@nestjs/common';
import { MetadataScanner, ModulesContainer } from '@nestjs/core';
import type { InstanceWrapper } from '@nestjs/core/injector/instance-wrapper.js';
import type { Module } from '@nestjs/core/injector/module.js';
import { InvalidOptionsError } from './errors.js';

/** Injection token: the list of MethodInterceptors (cache, lock, ...) the explorer applies. */
export const METHOD_INTERCEPTORS = Symbol('rtk:method-interceptors');
/** Injection token: closes every connection of the toolkit, when a decorator's options stop the start. */
export const CLOSE_CONNECTIONS = Symbol('rtk:close-connections');

const TRAMPOLINE = Symbol('rtk:trampoline');
const INVOKERS = Symbol('rtk:invokers');

type AnyMethod = (this: unknown, ...args: unknown[]) => unknown;
type Invoker = (instance: object, args: unknown[]) => unknown;
type Holder = { [INVOKERS]?: Map<string | symbol, Invoker> };
type Step = (args: unknown[], next: NextCall) => Promise<unknown>;
/** At bootstrap a decorator's options that stop the start fail `init()`; on a later adoption, the method's calls. */
type OnPrepareError = 'throw' | 'reject';
/** A class (or the function a factory's instance was made by): what wrappers and instances are matched on. */
type ClassLike = { readonly prototype: unknown; readonly name: string };

export interface InterceptedMethod {
  readonly instance: object;
  readonly className: string;
  readonly methodName: string;
}

/** Calls the next interceptor or, last, the original method with the same `this` and arguments. */
export type NextCall = () => Promise<unknown>;

/**
 * What a feature plugs into the explorer: the metadata key its decorator writes and how to run a method that carries
 * it. `prepare` runs once per decorated method and instance (validate, precompute keys): at bootstrap, or at the first
 * call of an instance Nest made later (see MethodInterceptionExplorer); the returned function runs on every call.
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
 * the invoker the explorer attached to *this instance*. When there is none it asks the running apps' explorers to adopt
 * the instance (one Nest made after bootstrap: a transient provider's, a lazily loaded module's), and calls the
 * original method when none does (the module is not imported, or the provider is request-scoped).
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

/**
 * One per running app (its explorer), added once its bootstrap exploration succeeded and removed when it closes.
 * Module state, as the trampolines are: an instance does not know which app made it. Held weakly: an app whose init
 * failed after the explorer's (no destroy hook runs then) and that is dropped is not kept alive by this set.
 */
const adopters = new Set<WeakRef<Adopter>>();
interface Adopter {
  /** Whether the instance is one of this app's static instances: if so it is decorated now. */
  adopt(instance: object): boolean;
  /** No app took it (asked only then: another app may own what this one cannot place). */
  declined(instance: object): void;
}

/** The miss path of a trampoline: only reached when the instance has no invoker for the method. */
function adopt(self: unknown, propertyKey: string | symbol): Invoker | undefined {
  if (adopters.size === 0 || self === null || typeof self !== 'object') return undefined;
  const live: Adopter[] = [];
  for (const ref of adopters) {
    const adopter = ref.deref();
    if (adopter === undefined) adopters.delete(ref);
    else if (adopter.adopt(self)) return (self as Holder)[INVOKERS]?.get(propertyKey);
    else live.push(adopter);
  }
  for (const adopter of live) adopter.declined(self);
  return undefined;
}

function makeTrampoline(original: AnyMethod, propertyKey: string | symbol): AnyMethod {
  const trampoline = function (this: unknown, ...args: unknown[]): unknown {
    // A singleton's invoker is attached at bootstrap: found at once, `adopt` is not reached.
    const invoker = (this as Holder | undefined)?.[INVOKERS]?.get(propertyKey) ?? adopt(this, propertyKey);
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

/** The decorated (trampoline) methods of a prototype and its parents; a prototype's list never changes. */
const decoratedByPrototype = new WeakMap<object, string[]>();
function decoratedMethods(scanner: MetadataScanner, prototype: object): string[] {
  let names = decoratedByPrototype.get(prototype);
  if (names === undefined) {
    names = scanner
      .getAllMethodNames(prototype)
      .filter((name) => isTrampoline((prototype as Record<string, unknown>)[name]));
    decoratedByPrototype.set(prototype, names);
  }
  return names;
}

/**
 * The class a wrapper's instances have: a class provider's or controller's class; a value's or a built factory's,
 * from its instance. `undefined`: a factory with no value yet (a lazily loaded module's, mid-build, or one that gave
 * null); `null`: not an object, nothing to explore.
 */
function classOf(wrapper: InstanceWrapper): ClassLike | null | undefined {
  if (typeof wrapper.metatype === 'function' && !wrapper.isFactory) return wrapper.metatype;
  const instance: unknown = wrapper.instance;
  if (instance === null || instance === undefined) return wrapper.isFactory ? undefined : null;
  return typeof instance === 'object' ? (constructorOf(instance) ?? null) : null;
}

function constructorOf(instance: object): ClassLike | undefined {
  return (Object.getPrototypeOf(instance) as { constructor?: ClassLike } | null)?.constructor;
}

/** A transient provider has an instance per consumer (inquirer) besides its own: each is decorated. */
function instancesOf(wrapper: InstanceWrapper): object[] {
  const all: unknown[] = [wrapper.instance];
  if (wrapper.isTransient) for (const host of wrapper.getStaticTransientInstances()) all.push(host?.instance);
  return all.filter((i): i is object => i !== null && typeof i === 'object');
}

function holds(wrapper: InstanceWrapper, instance: object): boolean {
  if (wrapper.instance === instance) return true;
  return wrapper.isTransient && wrapper.getStaticTransientInstances().some((host) => host?.instance === instance);
}

/**
 * Finds every method of a static provider or controller that carries an interceptor's metadata and attaches the
 * composed interceptor chain to that instance (the shape of @nestjs/schedule's explorer): at bootstrap for the
 * instances that exist then (singletons, and each consumer's instance of a transient provider); later, at the first
 * call a trampoline cannot serve, for the instances Nest makes after bootstrap (a module loaded with
 * `LazyModuleLoader`, whose lifecycle hooks never reach this explorer; a transient provider's instance for a consumer
 * made later). Request-scoped providers (and those depending on one) are left undecorated, with a warning at start.
 */
@Injectable()
export class MethodInterceptionExplorer implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger('RedisToolkit');
  private ordered: MethodInterceptor[] = [];
  /** Modules already indexed; `indexedCount` is how many there were, to notice a lazy load at a glance. */
  private readonly indexed = new WeakSet<Module>();
  private indexedCount = 0;
  /** Static (singleton or transient) wrappers whose class has decorated methods, by that class. */
  private readonly byClass = new Map<ClassLike, InstanceWrapper[]>();
  /** Classes with decorated methods provided request-scoped: a call on one of their instances is not adopted. */
  private readonly requestScoped = new WeakSet<ClassLike>();
  /** Factory providers of a lazily loaded module that were not built when it was indexed. */
  private readonly unbuilt = new Set<InstanceWrapper>();
  /** Instances whose methods this explorer prepared (or failed to). */
  private readonly explored = new WeakSet<object>();
  private readonly warnedTransient = new WeakSet<ClassLike>();
  private readonly adopter: Adopter = {
    adopt: (instance) => this.adopt(instance),
    declined: (instance) => this.warnTransientOutsideGraph(instance),
  };
  private readonly adopterRef = new WeakRef(this.adopter);

  constructor(
    private readonly modules: ModulesContainer,
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
    this.ordered = [...this.interceptors].sort((a, b) => a.order - b.order);
    try {
      this.indexNewModules('throw');
    } catch (err) {
      await this.closeConnections?.().catch(() => undefined);
      throw err;
    }
    adopters.add(this.adopterRef);
  }

  onModuleDestroy(): void {
    adopters.delete(this.adopterRef);
  }

  /** Whether `instance` is one of this app's static instances: if so its decorated methods get their invokers. */
  private adopt(instance: object): boolean {
    if (this.explored.has(instance)) return false;
    const type = constructorOf(instance);
    if (type === undefined) return false;
    // A request-scoped provider's instance (one per request) is answered without scanning the modules. (Factories
    // still unbuilt are not waited for here: one that gives null would otherwise stop this shortcut for good.)
    const noNewModule = this.modules.size === this.indexedCount;
    if (noNewModule && this.requestScoped.has(type) && !this.byClass.has(type)) return false;
    let wrapper = this.owner(instance, type);
    if (wrapper === undefined) {
      // A module loaded since (its instances are explored as it is indexed), or a factory built since. Otherwise an
      // instance of no wrapper here (`new` by hand, another app's, one for a request-scoped consumer): unknown
      // modules are looked for each time, a WeakSet check per module, so a load is never missed.
      this.indexNewModules('reject');
      for (const pending of [...this.unbuilt]) {
        if (classOf(pending) === undefined) continue;
        this.unbuilt.delete(pending);
        this.index(pending, 'reject');
      }
      wrapper = this.owner(instance, type);
    }
    if (wrapper === undefined) return false;
    this.explore(wrapper, instance, 'reject');
    return true;
  }

  /**
   * A transient provider's instance that is none of its static ones: made for a request-scoped consumer, or by
   * `ModuleRef.resolve` / `create`. Which app made it cannot be told, so it is not decorated: said once per class.
   */
  private warnTransientOutsideGraph(instance: object): void {
    const type = constructorOf(instance);
    if (type === undefined || this.warnedTransient.has(type)) return;
    if (!this.byClass.get(type)?.some((wrapper) => wrapper.isTransient)) return;
    this.warnedTransient.add(type);
    this.logger.warn(
      `${type.name} is a TRANSIENT provider and one of its instances was made outside the static graph (for a ` +
        'request-scoped consumer, or by ModuleRef.resolve / create): its Redis toolkit decorators are not applied ' +
        'on that instance, which runs its methods bare (no lock taken, nothing cached or evicted). Inject it into ' +
        'singleton providers only, or call LockService.using / CacheService.getOrSet from it',
    );
  }

  private owner(instance: object, type: ClassLike): InstanceWrapper | undefined {
    return this.byClass.get(type)?.find((wrapper) => holds(wrapper, instance));
  }

  private indexNewModules(onError: OnPrepareError): void {
    this.indexedCount = this.modules.size;
    for (const module of this.modules.values()) {
      if (this.indexed.has(module)) continue;
      this.indexed.add(module);
      for (const wrapper of [...module.providers.values(), ...module.controllers.values()])
        this.index(wrapper, onError);
    }
  }

  private index(wrapper: InstanceWrapper, onError: OnPrepareError): void {
    if (wrapper.isAlias) return;
    const type = classOf(wrapper);
    if (type === undefined) {
      // At bootstrap every static factory is built; a lazily loaded module's may not be yet: looked at again later.
      if (onError === 'reject' && wrapper.isDependencyTreeStatic()) this.unbuilt.add(wrapper);
      return;
    }
    if (type === null) return;
    const methods = decoratedMethods(this.scanner, type.prototype as object);
    if (methods.length === 0) return;
    if (!wrapper.isDependencyTreeStatic()) {
      this.requestScoped.add(type);
      for (const methodName of methods) this.warnRequestScoped(wrapper, type, methodName);
      return;
    }
    const wrappers = this.byClass.get(type);
    if (wrappers) wrappers.push(wrapper);
    else this.byClass.set(type, [wrapper]);
    for (const instance of instancesOf(wrapper)) this.explore(wrapper, instance, onError);
  }

  private warnRequestScoped(wrapper: InstanceWrapper, type: ClassLike, methodName: string): void {
    const method = (type.prototype as Record<string, unknown>)[methodName];
    const decorators = this.ordered
      .filter((interceptor) => Reflect.getMetadata(interceptor.metadataKey, method as object) !== undefined)
      .map((interceptor) => interceptor.decoratorName);
    this.logger.warn(
      `${wrapper.metatype?.name ?? type.name}.${methodName} is request-scoped or depends on a request-scoped ` +
        `provider; its Redis toolkit decorators (${decorators.join(', ')}) are not applied: every call runs the ` +
        'method bare (no lock taken, nothing cached or evicted). Move the method to a singleton provider (one that ' +
        'injects no request-scoped provider), or call LockService.using / CacheService.getOrSet from it',
    );
  }

  /** Prepares each decorated method of `instance` and attaches its invoker (once per instance). */
  private explore(wrapper: InstanceWrapper, instance: object, onError: OnPrepareError): void {
    if (this.explored.has(instance)) return;
    this.explored.add(instance);
    const prototype = Object.getPrototypeOf(instance) as object | null;
    if (!prototype) return;
    const className = wrapper.metatype?.name ?? instance.constructor.name;
    for (const methodName of decoratedMethods(this.scanner, prototype)) {
      const method = (prototype as Record<string, unknown>)[methodName] as AnyMethod;
      let steps: Step[];
      try {
        steps = this.ordered.flatMap((interceptor) => {
          const meta: unknown = Reflect.getMetadata(interceptor.metadataKey, method);
          return meta === undefined ? [] : [interceptor.prepare({ instance, className, methodName }, meta)];
        });
      } catch (err) {
        if (onError === 'throw') throw err;
        // After bootstrap there is no start to stop: the method fails each call with the error (never runs bare).
        this.logger.error(`${className}.${methodName}: ${(err as Error).message}; each call of it fails with this`);
        setInvoker(instance, methodName, () => Promise.reject(err));
        continue;
      }
      if (steps.length > 0) attachInvoker(instance, methodName, method[TRAMPOLINE as keyof typeof method], steps);
    }
  }
}

function setInvoker(instance: object, methodName: string, invoker: Invoker): void {
  let invokers = (instance as Holder)[INVOKERS];
  if (!invokers) {
    invokers = new Map();
    Object.defineProperty(instance, INVOKERS, { value: invokers, enumerable: false });
  }
  invokers.set(methodName, invoker);
}

function attachInvoker(instance: object, methodName: string, original: AnyMethod, steps: Step[]): void {
  setInvoker(instance, methodName, (self, args) => {
    const call = (index: number): Promise<unknown> =>
      index === steps.length
        ? Promise.resolve().then(() => original.apply(self, args))
        : steps[index](args, () => call(index + 1));
    return call(0);
  });
}
