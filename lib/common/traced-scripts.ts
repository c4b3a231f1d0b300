/**
 * What a tracer's command serializer needs to tell the toolkit's script calls from any other EVAL / EVALSHA: the
 * toolkit's Lua scripts by sha1 (every LuaScript registers itself, lua-script.ts), the key prefixes under which session
 * keys hold a session id (every SessionRecords registers its own), and whether the toolkit's serializer for
 * OpenTelemetry's ioredis instrumentation (`nestjs-redis-toolkit/otel`) was made in this process
 * (docs/observability.md, "Beside OpenTelemetry's ioredis instrumentation").
 *
 * They live on globalThis under `Symbol.for` keys rather than in this module: the package root and the `/otel`
 * subpath can be loaded as two copies of lib/common (one by `import`, one by `require`, or one bundled), and the
 * serializer must still know every script and session prefix of the copy that sends them.
 */

const SCRIPTS = Symbol.for('nestjs-redis-toolkit.lua-scripts');
const SERIALIZER = Symbol.for('nestjs-redis-toolkit.db-statement-serializer');
const SESSION_PREFIXES = Symbol.for('nestjs-redis-toolkit.session-key-prefixes');

interface TracedScriptsState {
  [SCRIPTS]?: Map<string, string>;
  [SERIALIZER]?: boolean;
  [SESSION_PREFIXES]?: Set<string>;
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

function sessionPrefixes(): Set<string> {
  let prefixes = state[SESSION_PREFIXES];
  if (prefixes === undefined) {
    prefixes = new Set<string>();
    state[SESSION_PREFIXES] = prefixes;
  }
  return prefixes;
}

/**
 * Called where session keys are built (SessionRecords, for SessionService and each RedisSessionStore): under this
 * `keyPrefix`, `sess:{<id>}` keys and the `sess:user:{…}` indexes' members hold session ids, which the serializer
 * must not write. Never removed: a prefix's keys may still be sent after its app closed (another app, a store).
 */
export function registerSessionKeyPrefix(keyPrefix: string): void {
  sessionPrefixes().add(keyPrefix);
}

/** Every key prefix registered by registerSessionKeyPrefix in this process, by any copy of the package. */
export function sessionKeyPrefixes(): ReadonlySet<string> {
  return sessionPrefixes();
}

/** The toolkit's db statement serializer was made in this process: the start-time warning is not said. */
export function noteToolkitSerializer(): void {
  state[SERIALIZER] = true;
}

export function toolkitSerializerMade(): boolean {
  return state[SERIALIZER] === true;
}
