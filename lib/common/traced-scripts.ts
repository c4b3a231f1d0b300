/**
 * What a tracer's command serializer needs to tell the toolkit's script calls from any other EVAL / EVALSHA: the
 * toolkit's Lua scripts by sha1 (every LuaScript registers itself, lua-script.ts), and whether the toolkit's
 * serializer for OpenTelemetry's ioredis instrumentation (`nestjs-redis-toolkit/otel`) was made in this process
 * (docs/observability.md, "Beside OpenTelemetry's ioredis instrumentation").
 *
 * Both live on globalThis under `Symbol.for` keys rather than in this module: the package root and the `/otel`
 * subpath can be loaded as two copies of lib/common (one by `import`, one by `require`, or one bundled), and the
 * serializer must still know every script of the copy that sends them.
 */

const SCRIPTS = Symbol.for('nestjs-redis-toolkit.lua-scripts');
const SERIALIZER = Symbol.for('nestjs-redis-toolkit.db-statement-serializer');

interface TracedScriptsState {
  [SCRIPTS]?: Map<string, string>;
  [SERIALIZER]?: boolean;
}

const state = globalThis as TracedScriptsState;

function scripts(): Map<string, string> {
  let byHash = state[SCRIPTS];
  if (byHash === undefined) {
    byHash = new Map<string, string>();
    state[SCRIPTS] = byHash;
  }
  return byHash;
}

/** Called by each LuaScript: its sha1 (lowercase hex) and name. The first name of a sha stays (variants share it). */
export function registerToolkitScript(sha: string, name: string): void {
  const byHash = scripts();
  if (!byHash.has(sha)) byHash.set(sha, name);
}

/** The name of the toolkit's script with this sha1 (any case), or undefined when it is not one of the toolkit's. */
export function toolkitScriptName(sha: string): string | undefined {
  return scripts().get(sha.length === 40 ? sha.toLowerCase() : sha);
}

/** The toolkit's db statement serializer was made in this process: the start-time warning is not said. */
export function noteToolkitSerializer(): void {
  state[SERIALIZER] = true;
}

export function toolkitSerializerMade(): boolean {
  return state[SERIALIZER] === true;
}
