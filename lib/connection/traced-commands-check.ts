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
 */
const warned = new WeakSet<object>();

export function tracedCommandsWarning(client: RedisClient): string | undefined {
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
