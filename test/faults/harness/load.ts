/**
 * A bounded HTTP load generator for the fault suite: loopback only, a fixed number of concurrent callers per
 * endpoint, stopped by a time bound and a request-count bound, every request with its own timeout. It keeps every
 * sample (start time, status, latency) so a test can look at what happened before, during and after a fault.
 */
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';

export interface LoadTarget {
  /** Label in reports. */
  name: string;
  /** Path on the app, e.g. `/health`. */
  path: string;
  headers?: Record<string, string>;
}

export interface LoadOptions {
  /** Callers per target. Default 4. */
  concurrency?: number;
  /** Time bound, ms. */
  durationMs: number;
  /** Request-count bound per target. Default 20 000. */
  maxRequests?: number;
  /** Per-request timeout, ms; a request that hits it counts as 'timeout' (status 0). Default 10 000. */
  timeoutMs?: number;
  /**
   * Keeps the load going past `durationMs` until this many ms since the start (read on every loop), so what comes
   * after a late event (a restart that took long on a busy machine) is still observed. Capped at durationMs + 30 s.
   */
  runUntilMs?: () => number;
}

export interface Sample {
  /** ms since the load started. */
  at: number;
  status: number;
  latencyMs: number;
  /** `status` field of a JSON body (e.g. /health's 'up' | 'down'), when there is one. */
  bodyStatus?: string;
}

export interface LoadReport {
  name: string;
  path: string;
  sent: number;
  ok2xx: number;
  s429: number;
  s503: number;
  other: number;
  /** Timeouts and connection errors (status 0), included in `other`. */
  failed: number;
  maxLatencyMs: number;
  p99LatencyMs: number;
  samples: Sample[];
}

function get(
  agent: Agent,
  origin: string,
  target: LoadTarget,
  timeoutMs: number,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = request(`${origin}${target.path}`, { agent, headers: target.headers, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        // Only the start of a body is kept (enough for a JSON status field).
        if (size < 4096) chunks.push(c);
        size += c.length;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', () => resolve({ status: 0, body: '' }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.end();
  });
}

function bodyStatus(body: string): string | undefined {
  if (!body.startsWith('{')) return undefined;
  try {
    const parsed: unknown = JSON.parse(body);
    const status =
      typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>).status : undefined;
    return typeof status === 'string' ? status : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Runs the load and, while it runs, `during(elapsedMs)` hooks at the given offsets (the faults). Resolves with one
 * report per target once the time bound has passed and every request in flight has settled.
 */
export async function runLoad(
  origin: string,
  targets: LoadTarget[],
  options: LoadOptions,
  events: { atMs: number; run: () => unknown }[] = [],
): Promise<LoadReport[]> {
  if (!/^http:\/\/(127\.0\.0\.1|localhost)(:\d+)?$/.test(origin))
    throw new Error(`runLoad is loopback only, got ${origin}`);
  const { concurrency = 4, durationMs, maxRequests = 20_000, timeoutMs = 10_000, runUntilMs } = options;
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency * targets.length });
  const started = performance.now();
  const hardDeadline = started + durationMs + 30_000;
  const running = (): boolean => {
    const now = performance.now();
    if (now >= hardDeadline) return false;
    return now < started + Math.max(durationMs, runUntilMs?.() ?? 0);
  };
  const timers = events.map((e) => setTimeout(() => void Promise.resolve(e.run()).catch(() => undefined), e.atMs));
  try {
    return await Promise.all(
      targets.map(async (target) => {
        const samples: Sample[] = [];
        let sent = 0;
        await Promise.all(
          Array.from({ length: concurrency }, async () => {
            while (running() && sent < maxRequests) {
              sent++;
              const t = performance.now();
              const { status, body } = await get(agent, origin, target, timeoutMs);
              samples.push({ at: t - started, status, latencyMs: performance.now() - t, bodyStatus: bodyStatus(body) });
            }
          }),
        );
        samples.sort((a, b) => a.at - b.at);
        const latencies = samples.map((s) => s.latencyMs).sort((a, b) => a - b);
        const count = (f: (s: Sample) => boolean): number => samples.filter(f).length;
        return {
          name: target.name,
          path: target.path,
          sent: samples.length,
          ok2xx: count((s) => s.status >= 200 && s.status < 300),
          s429: count((s) => s.status === 429),
          s503: count((s) => s.status === 503),
          other: count((s) => !(s.status >= 200 && s.status < 300) && s.status !== 429 && s.status !== 503),
          failed: count((s) => s.status === 0),
          maxLatencyMs: latencies.at(-1) ?? 0,
          p99LatencyMs: latencies[Math.floor(latencies.length * 0.99)] ?? 0,
          samples,
        };
      }),
    );
  } finally {
    for (const t of timers) clearTimeout(t);
    agent.destroy();
  }
}

/** A markdown table of reports (requests sent, 2xx, 429, 503, other, max latency). */
export function formatReports(title: string, reports: LoadReport[]): string {
  const lines = [
    `#### ${title}`,
    '',
    '| endpoint | sent | 2xx | 429 | 503 | other | max ms | p99 ms |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of reports) {
    lines.push(
      `| ${r.name} | ${r.sent} | ${r.ok2xx} | ${r.s429} | ${r.s503} | ${r.other} | ${r.maxLatencyMs.toFixed(0)} | ${r.p99LatencyMs.toFixed(0)} |`,
    );
  }
  return lines.join('\n');
}
