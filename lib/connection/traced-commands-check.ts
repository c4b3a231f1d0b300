import { channel } from 'node:diagnostics_channel';
import { Redis } from 'ioredis';
import { toolkitSerializerMade } from '../common/traced-scripts.js';
import type { RedisClient } from '../common/lua-script.js';

/**
 * The start-time check of docs/observability.md, "Beside OpenTelemetry's ioredis instrumentation": ioredis's
 * `sendCommand` wrapped by a tracer (OpenTelemetry's `@opentelemetry/instrumentation-ioredis`, which most Nest apps get
 * from `@opentelemetry/auto-instrumentations-node`) while the toolkit's `dbStatementSerializer` was never made in this
 * process. That instrumentation's default serializer writes every argument of EVAL / EVALSHA into each command's span
 * (`db.query.text`), and the toolkit's scripts carry session contents, cached values and lock tokens there: a warning
 * naming the fix, once per wrapping (a tracer that wraps again, after a disable and enable, is warned of again).
 *
 * What is seen is the wrapping only (shimmer's marks, which OpenTelemetry's instrumentations set): the
 * instrumentation's config is not reachable from it, so a serializer of the app's own that drops the arguments is not
 * seen either; wrap it in the toolkit's (`redisToolkitDbStatementSerializer(yours)`), which also silences this.
 *
 * dd-trace wraps `sendCommand` without those marks and writes every argument of every command (up to 100 characters
 * each) into its spans' `redis.raw_command`: seen by its own channel instead (below), and warned of once per process
 * ("Beside Datadog's and Elastic's tracers"). elastic-apm-node records the command's name only (and leaves ioredis 6
 * unwrapped): nothing to warn of.
 */
const warned = new WeakSet<object>();

export function tracedCommandsWarning(client: RedisClient): string | undefined {
  const warnings = [otelWarning(client), ddTraceWarning()].filter((w) => w !== undefined);
  return warnings.length > 0 ? warnings.join(' ') : undefined;
}

function otelWarning(client: RedisClient): string | undefined {
  if (toolkitSerializerMade()) return undefined;
  const ownSendCommand = client instanceof Redis ? undefined : (client as { sendCommand?: unknown }).sendCommand;
  const wrapped = [Redis.prototype.sendCommand, ownSendCommand].find(isWrapped);
  if (wrapped === undefined || warned.has(wrapped)) return undefined;
  warned.add(wrapped);
  return (
    "ioredis's sendCommand is wrapped by a tracer (OpenTelemetry's @opentelemetry/instrumentation-ioredis?): " +
    'with its default dbStatementSerializer each span of a Lua script call (EVALSHA) records every argument in ' +
    "db.query.text, and the toolkit's scripts carry session contents, published messages and lock tokens there. " +
    "Give the instrumentation the toolkit's serializer: new IORedisInstrumentation({ dbStatementSerializer: " +
    "redisToolkitDbStatementSerializer() }) from 'nestjs-redis-toolkit/otel' " +
    '(docs/observability.md, "Beside OpenTelemetry\'s ioredis instrumentation")'
  );
}

/** shimmer's marks on a wrapped function (what @opentelemetry/instrumentation's isWrapped reads). */
function isWrapped(fn: unknown): fn is object {
  if (typeof fn !== 'function') return false;
  const marks = fn as { __wrapped?: unknown; __original?: unknown; __unwrap?: unknown };
  return marks.__wrapped === true && typeof marks.__original === 'function' && typeof marks.__unwrap === 'function';
}

/**
 * dd-trace's ioredis integration publishes each command on this channel from its wrapper of `sendCommand`, and its
 * plugin subscribes only while enabled (not with DD_TRACE_IOREDIS_ENABLED=false, nor when its hook never saw ioredis
 * load: `--require dd-trace/init` in an ES module app).
 */
const ddTraceCommands = channel('apm:ioredis:command:start');
let ddTraceWarned = false;

function ddTraceWarning(): string | undefined {
  if (ddTraceWarned || !ddTraceCommands.hasSubscribers || !ddTraceTracesThem()) return undefined;
  ddTraceWarned = true;
  return (
    "dd-trace traces ioredis: each command's span records its arguments in redis.raw_command (up to 100 characters " +
    "each), and the toolkit's Lua script calls (EVALSHA) carry session contents, published messages and lock tokens " +
    "there (and ioredis's HELLO the connection's password, when it has one). Leave those commands out of its spans " +
    "before the app starts: tracer.use('ioredis', { blocklist: ['evalsha', 'eval', 'hello'] }) " +
    '(docs/observability.md, "Beside Datadog\'s and Elastic\'s tracers")'
  );
}

interface DdTraceShape {
  _pluginManager?: { _pluginsByName?: { ioredis?: { config?: { filter?: unknown } } } };
}

/**
 * Whether dd-trace makes spans of EVALSHA, EVAL or HELLO (ioredis 6 sends `HELLO 3 AUTH <user> <password>`, and
 * dd-trace hides the arguments of AUTH only): the ioredis plugin's `filter` (what its allowlist, blocklist or
 * filter option became), read where dd-trace 5 and 6 keep their tracer (`global._ddtrace`; the same path in 5.132.0
 * and 6.21.0, and neither offers a public way to read a plugin's config: `tracer.use` only sets it). Not found there
 * (another layout): assumed to, so that the warning is not lost.
 */
function ddTraceTracesThem(): boolean {
  const tracer = (globalThis as { _ddtrace?: DdTraceShape })._ddtrace;
  const filter = tracer?._pluginManager?._pluginsByName?.ioredis?.config?.filter;
  if (typeof filter !== 'function') return true;
  try {
    return ['EVALSHA', 'EVAL', 'HELLO'].some((command) => filter(command) !== false);
  } catch {
    return true;
  }
}
