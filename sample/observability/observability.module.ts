import { Controller, Get, Header, Inject, Module, type OnApplicationShutdown } from '@nestjs/common';
import { HealthCheck, HealthCheckService, TerminusModule } from '@nestjs/terminus';
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { RedisToolkitInstrumentation } from '../../lib/otel/index.js';
import { RedisToolkitHealthIndicator } from '../../lib/terminus/index.js';

/**
 * The OpenTelemetry pieces of the sample: the toolkit's instrumentation on a MeterProvider whose reader is the OTel
 * Prometheus exporter, with its own HTTP server off (the app serves the text itself at GET /metrics, on Express and
 * Fastify alike). Why the OTel exporter and not prom-client: the metrics are defined once, through the OTel API, so
 * the same instrumentation feeds Prometheus here and an OTLP collector elsewhere (docs/observability.md).
 */
class SampleTelemetry implements OnApplicationShutdown {
  readonly exporter = new PrometheusExporter({ preventServerStart: true });
  private readonly serializer = new PrometheusSerializer();
  private readonly provider = new MeterProvider({ readers: [this.exporter] });
  private readonly instrumentation = new RedisToolkitInstrumentation({ enabled: false, traces: false });

  constructor() {
    this.instrumentation.setMeterProvider(this.provider);
    this.instrumentation.enable();
  }

  /** The Prometheus text exposition of every metric collected so far. */
  async scrape(): Promise<string> {
    const { resourceMetrics } = await this.exporter.collect();
    return this.serializer.serialize(resourceMetrics);
  }

  async onApplicationShutdown(): Promise<void> {
    this.instrumentation.disable();
    await this.provider.shutdown();
  }
}

@Controller()
export class ObservabilityController {
  constructor(
    @Inject(SampleTelemetry) private readonly telemetry: SampleTelemetry,
    private readonly health: HealthCheckService,
    private readonly redis: RedisToolkitHealthIndicator,
  ) {}

  /** Prometheus scrape endpoint (text format 0.0.4). */
  @Get('metrics')
  @Header('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')
  metrics(): Promise<string> {
    return this.telemetry.scrape();
  }

  /** Readiness through @nestjs/terminus: 200 when Redis is up (or degraded), 503 when it is down. */
  @Get('health/ready')
  @HealthCheck()
  ready() {
    return this.health.check([() => this.redis.isHealthy('redis')]);
  }
}

@Module({
  imports: [TerminusModule],
  controllers: [ObservabilityController],
  providers: [SampleTelemetry, RedisToolkitHealthIndicator],
})
export class ObservabilityModule {}
