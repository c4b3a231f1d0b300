// nestjs-redis-toolkit/otel: OpenTelemetry spans and metrics from the toolkit's diagnostics channels
// (docs/observability.md). Needs the optional peer @opentelemetry/api; the package root never imports it.
export {
  INSTRUMENTATION_NAME,
  INSTRUMENTATION_VERSION,
  RedisToolkitInstrumentation,
  type RedisToolkitInstrumentationConfig,
} from './redis-toolkit.instrumentation.js';
export {
  type DbStatementSerializer,
  type RedisCommandArgs,
  redisToolkitDbStatementSerializer,
} from './otel.db-statement.js';
