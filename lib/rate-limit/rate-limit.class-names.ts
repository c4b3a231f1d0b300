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
 */
export function classNameOf(modules: ModulesContainer | undefined, cls: object & { name: string }): string {
  if (modules === undefined) return cls.name;
  let names = namesOf.get(modules);
  if (names === undefined) namesOf.set(modules, (names = distinctNames(modules)));
  return names.get(cls) ?? cls.name;
}

/** Per app (its ModulesContainer): the distinct names of the classes whose name another class has. */
const namesOf = new WeakMap<ModulesContainer, Map<object, string>>();

/** Class metadata that says where a class is routed (PATH_, VERSION_, HOST_METADATA; @WebSocketGateway's options). */
const ROUTING: [string, string][] = [
  ['path', ''],
  ['__version__', 'v:'],
  ['host', 'host:'],
  ['websockets:gateway_options', 'ws:'],
];

function distinctNames(modules: ModulesContainer): Map<object, string> {
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
  const names = new Map<object, string>();
  for (const [name, classes] of byName) {
    if (classes.size < 2) continue;
    const seen = new Map<string, number>();
    for (const [cls, declaring] of classes) {
      let where = [declaring.sort().join(','), ...ROUTING.map(([key, label]) => routing(cls, key, label))]
        .filter((part) => part !== '')
        .join(' ');
      // the same module, path, version and host (not a working app: Nest would route both to one): by order
      const n = (seen.get(where) ?? 0) + 1;
      seen.set(where, n);
      if (n > 1) where += ` #${n}`;
      names.set(cls, `${name}(${where})`);
    }
  }
  return names;
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
