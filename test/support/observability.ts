import { ServiceUnavailableException } from '@nestjs/common';
import type { MetricData } from '@opentelemetry/sdk-metrics';

/** What a @nestjs/terminus check reports: HealthCheckService.check rejects with a 503 carrying it when a check is down. */
export async function report(
  check: () => Promise<unknown>,
): Promise<{ status: string; details: Record<string, unknown> }> {
  try {
    return (await check()) as { status: string; details: Record<string, unknown> };
  } catch (err) {
    expect(err).toBeInstanceOf(ServiceUnavailableException);
    return (err as ServiceUnavailableException).getResponse() as { status: string; details: Record<string, unknown> };
  }
}

/** An OpenTelemetry metric's sum (or histogram count) per attribute set, as `k=v,k=v` → number. */
export function points(metric: MetricData | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of metric?.dataPoints ?? []) {
    const key = Object.entries(p.attributes)
      .map(([k, v]) => `${k}=${String(v)}`)
      .sort()
      .join(',');
    out[key] = typeof p.value === 'number' ? p.value : (p.value as { count: number }).count;
  }
  return out;
}
