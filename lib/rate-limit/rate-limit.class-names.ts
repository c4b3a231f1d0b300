import type { ModulesContainer } from '@nestjs/core';

/**
 * The name RateLimitGuard's default counter gives a handler's class (`<name>.<handler>:<policy>`). Two different
 * classes of one name in one app (v1/users.controller.ts and v2/users.controller.ts both `UsersController`, the usual
 * layout of a versioned API; two modules' `ItemsController`; a minifier's `r` and `r`) shared every counter: traffic
 * to v1 used up v2's limit. @nestjs/throttler keys by the class name too (sha256 of `Class-handler-name-tracker`) and
 * shares them the same way, silently; a limit is meant per route, so each such class now gets a name of its own: the
 * class name followed by where it is declared and routed (module, path, version, host, gateway namespace), e.g.
 * `UsersController(AppModule users v:2)`, the same in every process of one build. A class whose name no other class of
 * the app has keeps its plain name (its counters are unchanged).
 *
 * The classes are listed at the first call, and again when a class the list does not hold comes and the container
 * changed since (its module count, or a module that was still being built then: LazyModuleLoader adds a module before
 * its providers), so a module loaded later with LazyModuleLoader is seen; a class already listed costs one lookup, as
 * before. A name once given is kept: a class that comes later and has the name of one already named (or of another new
 * one) gets the longer name, and the one named first keeps its name even if that is the plain one. Renaming it would
 * reset its counters mid-run (a client at its limit admitted again, a `block` by its scope lifted) and, as processes
 * load modules at different times, split one limit into one counter per process. What keeping it costs: among lazily
 * loaded classes of one name, which one keeps the plain name depends on which was listed first (the classes there at
 * the first request are named as before, whatever is loaded later; a module loaded before it counts as one of them).
 */
export function classNameOf(modules: ModulesContainer | undefined, cls: object & { name: string }): string {
  if (modules === undefined) return cls.name;
  let names = namesOf.get(modules);
  if (names === undefined)
    namesOf.set(modules, (names = { byClass: new Map(), taken: new Set(), size: -1, pending: [] }));
  let name = names.byClass.get(cls);
  if (name === undefined && changedSince(modules, names)) {
    nameNewClasses(modules, names);
    name = names.byClass.get(cls);
  }
  return name ?? cls.name;
}

type NestModule = ModulesContainer extends Map<string, infer M> ? M : never;

/** The counter names given in one app, and what its container held when they were given. */
interface Names {
  /** Every class found so far, by its name (plain or longer); a name once given never changes. */
  readonly byClass: Map<object, string>;
  /** Every name given, so that a new one is distinct from all of them. */
  readonly taken: Set<string>;
  /** The container's module count at the last listing. */
  size: number;
  /** Modules not built yet at the last listing (a lazy load in progress): classes of theirs may have been missing. */
  pending: NestModule[];
}

/** Per app (its ModulesContainer). */
const namesOf = new WeakMap<ModulesContainer, Names>();

function changedSince(modules: ModulesContainer, names: Names): boolean {
  if (modules.size !== names.size) return true;
  // built since, or gone (a failed lazy load is rolled back, and another may have taken its place)
  return names.pending.some((m) => m.isInstantiated !== false || modules.get(m.token) !== m);
}

/** Class metadata that says where a class is routed (PATH_, VERSION_, HOST_METADATA; @WebSocketGateway's options). */
const ROUTING: [string, string][] = [
  ['path', ''],
  ['__version__', 'v:'],
  ['host', 'host:'],
  ['websockets:gateway_options', 'ws:'],
];

/** Names the classes of the container not named yet; those named before keep their names. */
function nameNewClasses(modules: ModulesContainer, names: Names): void {
  names.size = modules.size;
  names.pending = [...modules.values()].filter((m) => m.isInstantiated === false);
  // every controller and class provider (a gateway, a resolver) of the app, by name, with the modules declaring it
  const byName = new Map<string, Map<object, string[]>>();
  for (const module of modules.values()) {
    for (const wrapper of [...module.controllers.values(), ...module.providers.values()]) {
      const cls = wrapper.metatype as unknown;
      // a value or factory provider has no class of its own (a factory's metatype is the factory function)
      if (typeof cls !== 'function' || wrapper.inject || typeof cls.name !== 'string' || cls.name === '') continue;
      let classes = byName.get(cls.name);
      if (classes === undefined) byName.set(cls.name, (classes = new Map()));
      const declaring = classes.get(cls) ?? [];
      if (!declaring.includes(module.name)) declaring.push(module.name);
      classes.set(cls, declaring);
    }
  }
  for (const [name, classes] of byName) {
    for (const [cls, declaring] of classes) {
      if (names.byClass.has(cls)) continue;
      // alone of its name (and the name not kept by a class whose module is gone): the plain name
      let given = name;
      if (classes.size > 1 || names.taken.has(name)) {
        const where = [declaring.sort().join(','), ...ROUTING.map(([key, label]) => routing(cls, key, label))]
          .filter((part) => part !== '')
          .join(' ');
        given = `${name}(${where})`;
        // the same module, path, version and host (not a working app: Nest would route both to one): by order
        for (let n = 2; names.taken.has(given); n++) given = `${name}(${where} #${n})`;
      }
      names.byClass.set(cls, given);
      names.taken.add(given);
    }
  }
}

function routing(cls: object, key: string, label: string): string {
  const value: unknown = Reflect.getMetadata(key, cls);
  if (value === undefined || value === null) return '';
  if (typeof value === 'object' && !Array.isArray(value)) {
    const namespace = (value as { namespace?: unknown }).namespace;
    return namespace === undefined ? '' : `${label}${String(namespace)}`;
  }
  const list = (Array.isArray(value) ? value : [value]).map((v) => (typeof v === 'symbol' ? 'neutral' : String(v)));
  return `${label}${list.join(',')}`;
}
