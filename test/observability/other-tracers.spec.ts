/**
 * Beside Datadog's and Elastic's tracers (docs/observability.md): the toolkit's app (fixtures/traced-app.ts) in a
 * child process under dd-trace 5 and 6 (the same cases for each line; 6 needs Node 22+) and elastic-apm-node 4, each
 * preloaded as its docs say for an ES module app, sending to an HTTP server of this file that stands in for the
 * Datadog agent / the APM server and keeps what it gets.
 * Checked: every feature still works (Express and Fastify; one cluster run), nothing logged as an error, no unhandled
 * rejection; what each tracer sends of the toolkit's Redis commands; and the start-time warning: once under dd-trace,
 * whose spans hold the Lua scripts' arguments (session contents, lock tokens, messages), none with its documented
 * remedy, none under elastic-apm-node (which leaves ioredis 6 unwrapped, and records no arguments).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { jest } from '@jest/globals';
import { usePrivateRedis } from '../support/private-servers.js';
import { sharedServers } from '../support/shared-servers.js';
import { PLATFORMS } from '../support/toolkit-app.js';
import { hang, waitFor } from '../support/wait.js';
import { decodeMsgpack } from './fixtures/msgpack.js';
import type { Secrets } from './fixtures/traced-app.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HOOKS = pathToFileURL(fileURLToPath(new URL('../support/ts-hooks.mjs', import.meta.url))).href;
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

// a child process per case: a cold start of lib/ and Nest under a tracer, then what it sends (a bound)
jest.setTimeout(180_000);

/** What the stand-in agent / APM server received: path, body (gunzipped), the version dd-trace says it is. */
interface Received {
  path: string;
  body: Buffer;
  tracerVersion?: string;
}

const PASSWORD = `PW-${randomBytes(8).toString('hex')}`;
/** A server with requirepass: ioredis 6 then opens each connection with `HELLO 3 AUTH default <password>`. */
const passworded = usePrivateRedis({ password: PASSWORD });

let collector: Server;
let collectorUrl = '';
const received: Received[] = [];

beforeAll(async () => {
  collector = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const path = req.url ?? '/';
      const body = req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw;
      const tracerVersion = req.headers['datadog-meta-tracer-version'];
      received.push({ path, body, tracerVersion: typeof tracerVersion === 'string' ? tracerVersion : undefined });
      res.setHeader('content-type', 'application/json');
      // the APM server's version probe; the agent's answer to a trace payload; 202 for the APM intake
      if (path === '/') res.end('{"version":"8.15.0"}');
      else if (path.startsWith('/v0.4/traces')) res.end('{"rate_by_service":{}}');
      else {
        res.statusCode = path.startsWith('/intake/') ? 202 : 200;
        res.end('{}');
      }
    });
  });
  await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
  collectorUrl = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
});

afterAll(async () => {
  collector.closeAllConnections();
  await new Promise((resolve) => collector.close(resolve));
});

afterEach(() => {
  received.length = 0;
});

interface Tracer {
  args: string[];
  env: Record<string, string>;
}

const ddTraceEnv = (): Record<string, string> => ({
  DD_TRACE_AGENT_URL: collectorUrl,
  DD_TRACE_AGENT_PROTOCOL_VERSION: '0.4',
  DD_SERVICE: 'rtk-other-tracers',
  DD_TRACE_FLUSH_INTERVAL: '100',
  DD_INSTRUMENTATION_TELEMETRY_ENABLED: 'false',
  DD_REMOTE_CONFIGURATION_ENABLED: 'false',
  DD_RUNTIME_METRICS_ENABLED: 'false',
  DD_TRACE_STARTUP_LOGS: 'false',
});

/**
 * The dd-trace lines tried: 5 (`dd-trace`, Node 18+) and 6 (`dd-trace-6`, an npm alias of dd-trace@6, Node ≥ 22: on
 * an older Node its cases are skipped; CI runs them on its Node 24 / 26 line).
 */
const DD_TRACES = [
  { pkg: 'dd-trace', major: 5, minNode: 18 },
  { pkg: 'dd-trace-6', major: 6, minNode: 22 },
];
const NODE_MAJOR = Number(process.versions.node.split('.')[0]);

/** dd-trace's setup for an ES module app (Node ≥ 20.6): its loader hooks and `init()` before the app. */
const ddTrace = (pkg: string): Tracer => ({ args: ['--import', `${pkg}/initialize.mjs`], env: ddTraceEnv() });
/** ... plus its remedy (tracer.use('ioredis', { blocklist: ['evalsha', 'eval', 'hello'] })) before the app. */
const ddTraceBlocklist = (pkg: string): Tracer => {
  const remedy = pathToFileURL(fixture('dd-trace-blocklist.mjs'));
  remedy.searchParams.set('package', pkg);
  return { args: ['--import', `${pkg}/initialize.mjs`, '--import', remedy.href], env: ddTraceEnv() };
};
/** dd-trace's CommonJS setup (`--require dd-trace/init`), which an ES module app's imports do not pass through. */
const ddTraceRequire = (pkg: string): Tracer => ({ args: ['--require', `${pkg}/init`], env: ddTraceEnv() });
/** elastic-apm-node's setup for an ES module app: `-r elastic-apm-node/start` and its loader. */
const elastic = (): Tracer => ({
  args: ['-r', 'elastic-apm-node/start'],
  env: {
    ELASTIC_APM_SERVER_URL: collectorUrl,
    ELASTIC_APM_SERVICE_NAME: 'rtk-other-tracers',
    ELASTIC_APM_CENTRAL_CONFIG: 'false',
    ELASTIC_APM_API_REQUEST_TIME: '1s',
    ELASTIC_APM_METRICS_INTERVAL: '0s',
    ELASTIC_APM_CLOUD_PROVIDER: 'none',
  },
});

interface Result {
  failed?: string;
  work: { status: number; body: Record<string, unknown> & { lockToken: string } };
  l1: { status: number; body: unknown };
  limited: number[];
  warnings: string[];
  errors: string[];
  unhandled: string[];
}

interface Run {
  secrets: Secrets;
  result: Result;
  /** The child's stdout lines other than its result (the tracers' own logs). */
  log: string[];
}

/** Starts the app under `tracer`, waits for its result and for what the tracer sent of its last request, ends it. */
async function runUnder(
  tracer: Tracer,
  platform: string,
  target: 'single' | 'cluster' | { url: string } = 'single',
): Promise<Run> {
  const rnd = () => randomBytes(6).toString('hex');
  const secrets: Secrets = {
    // short: dd-trace keeps 100 characters of an argument, and the session's JSON starts with its metadata (~80)
    session: `SESS-${rnd().slice(0, 8)}`,
    update: `UPD-${rnd().slice(0, 8)}`,
    cached: `CACHED-VALUE-${rnd()}`,
    loaded: `LOADED-VALUE-${rnd()}`,
    published: `PUBLISHED-${rnd()}`,
  };
  const servers = sharedServers();
  const hooks = tracer.args.includes('elastic-apm-node/start')
    ? ['--import', HOOKS, '--import', pathToFileURL(fixture('elastic-esm-loader.mjs')).href]
    : ['--import', HOOKS];
  const proc: ChildProcess = spawn(
    process.execPath,
    ['--no-warnings', ...tracer.args, ...hooks, fixture('traced-app.ts')],
    {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        ...tracer.env,
        RTK_PLATFORM: platform,
        RTK_PREFIX: `rtk-ot-${rnd()}:`,
        RTK_SECRETS: JSON.stringify(secrets),
        ...(target === 'cluster'
          ? { RTK_REDIS_CLUSTER: JSON.stringify(servers.cluster) }
          : { RTK_REDIS_URL: target === 'single' ? servers.single.url : target.url }),
      },
    },
  );
  let stdout = '';
  let stderr = '';
  proc.stdout?.on('data', (c: Buffer) => (stdout += c.toString()));
  proc.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  let running = true;
  void exited.then(() => (running = false));
  const resultLine = () => stdout.split('\n').find((l) => l.startsWith('@@rtk '));
  try {
    // a cold start transpiles lib/ and boots Nest under the tracer: seconds on a busy 2-core machine (a bound)
    await waitFor(() => resultLine() !== undefined || !running, 90_000);
    const line = resultLine();
    if (!line) throw new Error(`the app gave no result:\n${stdout}\n${stderr}`);
    const result = JSON.parse(line.slice('@@rtk '.length)) as Result;
    if (result.failed) throw new Error(`the app failed: ${result.failed}\n${stderr}`);
    // the tracer sends finished traces in order: once /done's request is there, /work's is too
    const sent = () => received.map((r) => r.body.toString('latin1')).join('\n');
    await waitFor(() => sent().includes('/work') && sent().includes('/done'), 30_000);
    const log = stdout.split('\n').filter((l) => l !== '' && !l.startsWith('@@rtk '));
    return { secrets, result, log };
  } finally {
    proc.kill('SIGTERM');
    const stopped = await Promise.race([exited.then(() => true), hang(10_000, false)]);
    if (!stopped) proc.kill('SIGKILL');
  }
}

/** Every feature answered as without a tracer. */
function expectFeaturesWork({ result, secrets }: Run): void {
  expect(result.errors).toEqual([]);
  expect(result.unhandled).toEqual([]);
  expect(result.work.status).toBe(200);
  expect(result.work.body).toMatchObject({
    session: { card: secrets.session },
    updated: { card: secrets.session, note: secrets.update },
    reread: { card: secrets.session, note: secrets.update },
    cached: { v: secrets.cached },
    loaded: { v: secrets.loaded },
    received: [{ secret: secrets.published }, { secret: secrets.published }, { n: 2 }],
  });
  expect(result.work.body.lockToken).toMatch(/^[\w-]{16,}$/);
  // the L1: the key deleted by another client is dropped (CLIENT TRACKING's invalidation reached the app)
  expect(result.l1).toEqual({ status: 200, body: { first: 'v1', existed: 1, dropped: true } });
  expect(result.limited).toEqual([200, 200, 200, 429]);
}

/** The toolkit's warnings about a tracer recording its commands. */
const tracerWarnings = (run: Run) => run.result.warnings.filter((w) => /tracer|dd-trace|raw_command/.test(w));

/** Everything the tracer sent, as text (msgpack and JSON keep strings as they are). */
const sentText = () => received.map((r) => r.body.toString('utf8')).join('\n');

interface DdSpan {
  name: string;
  resource: string;
  trace_id: string;
  meta: Record<string, string>;
}

/** dd-trace's trace payloads. */
const ddTraces = () => received.filter((r) => r.path.startsWith('/v0.4/traces'));

/** dd-trace's spans, from its trace payloads. */
function ddSpans(): DdSpan[] {
  return ddTraces().flatMap((r) => (decodeMsgpack(r.body) as DdSpan[][]).flat());
}

/** dd-trace's Redis command spans: their redis.raw_command. */
const ddRawCommands = () => ddSpans().flatMap((s) => s.meta?.['redis.raw_command'] ?? []);

/** elastic-apm-node's events (ndjson lines of its intake requests). */
function elasticEvents(): Record<string, Record<string, unknown>>[] {
  return received
    .filter((r) => r.path.startsWith('/intake/v2/events'))
    .flatMap((r) => r.body.toString('utf8').split('\n'))
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, Record<string, unknown>>);
}

function dump(name: string, data: unknown): void {
  if (process.env.OTHER_TRACERS_DUMP)
    writeFileSync(`${process.env.OTHER_TRACERS_DUMP}.${name}.json`, JSON.stringify(data));
}

for (const { pkg, major, minNode } of DD_TRACES) {
  (NODE_MAJOR >= minNode ? describe : describe.skip)(`dd-trace ${major} (--import ${pkg}/initialize.mjs)`, () => {
    /** The line under test sent the traces (each trace payload says the tracer's version). */
    const expectSentByLine = () =>
      expect([...new Set(ddTraces().map((r) => r.tracerVersion))]).toEqual([expect.stringMatching(`^${major}\\.`)]);

    it.each(PLATFORMS)(
      "on %s: every feature works; its spans hold the script calls' arguments; the toolkit warns once naming the blocklist",
      async (platform) => {
        const run = await runUnder(ddTrace(pkg), platform);
        expectFeaturesWork(run);
        expectSentByLine();
        const warned = tracerWarnings(run);
        expect(warned).toHaveLength(1);
        expect(warned[0]).toContain("tracer.use('ioredis', { blocklist: ['evalsha', 'eval', 'hello'] })");
        expect(warned[0]).toContain("Beside Datadog's and Elastic's tracers");
        expect(warned[0]).not.toContain('IORedisInstrumentation');
        const raw = ddRawCommands();
        dump(`${pkg}-${platform}`, raw);
        const { secrets } = run;
        const token = run.result.work.body.lockToken;
        const scripts = raw.filter((c) => c.startsWith('EVALSHA '));
        // sessions.create (the contents), the lock's acquire, extend and release (its owner token), publish-many
        expect(scripts.filter((c) => c.includes(secrets.session)).length).toBeGreaterThanOrEqual(1);
        expect(scripts.filter((c) => c.includes(token))).toHaveLength(3);
        expect(scripts.filter((c) => c.includes(secrets.published))).toHaveLength(1);
        // plain commands keep their arguments too: the cached value in SET, a single publish's message in PUBLISH
        expect(raw.filter((c) => c.startsWith('SET ') && c.includes(secrets.cached))).toHaveLength(1);
        expect(raw.filter((c) => c.startsWith('PUBLISH ') && c.includes(secrets.published))).toHaveLength(1);
        expect(Math.max(...raw.map((c) => c.length))).toBeLessThanOrEqual(1000);
        // the command spans are children of the request's trace
        const work = ddSpans().find((s) => s.resource === 'GET /work');
        const create = ddSpans().find((s) => s.meta?.['redis.raw_command']?.includes(secrets.session));
        expect(create?.trace_id).toBe(work?.trace_id);
      },
    );

    it("with a password: the span of ioredis's HELLO holds it (dd-trace hides the arguments of AUTH only)", async () => {
      const run = await runUnder(ddTrace(pkg), 'express', { url: passworded.server.url });
      expectFeaturesWork(run);
      expect(tracerWarnings(run)).toHaveLength(1);
      const hello = ddRawCommands().filter((c) => c.startsWith('HELLO '));
      expect(hello.length).toBeGreaterThan(0);
      expect(hello.every((c) => c === `HELLO 3 AUTH default ${PASSWORD}`)).toBe(true);
    });

    it("with tracer.use('ioredis', { blocklist: ['evalsha', 'eval', 'hello'] }): no script call nor password in any span, no warning", async () => {
      const run = await runUnder(ddTraceBlocklist(pkg), 'express', { url: passworded.server.url });
      expectFeaturesWork(run);
      expectSentByLine();
      expect(tracerWarnings(run)).toEqual([]);
      const raw = ddRawCommands();
      dump(`${pkg}-blocklist`, raw);
      expect(raw.filter((c) => /^(EVAL|EVALSHA|HELLO) /.test(c))).toEqual([]);
      expect(raw.filter((c) => c.startsWith('GET ')).length).toBeGreaterThan(0);
      // the session's contents, the lock token and the password went in those commands only
      expect(sentText()).not.toContain(run.secrets.session);
      expect(sentText()).not.toContain(run.result.work.body.lockToken);
      expect(sentText()).not.toContain(PASSWORD);
      // what the blocklist leaves (documented): SET's value, PUBLISH's message, the session id in a GETEX's key
      expect(raw.some((c) => c.startsWith('SET ') && c.includes(run.secrets.cached))).toBe(true);
      expect(raw.some((c) => c.startsWith('PUBLISH ') && c.includes(run.secrets.published))).toBe(true);
      expect(raw.some((c) => /^GETEX \S+:sess:\{[\w-]{20,}\} /.test(c))).toBe(true);
    });

    it(`--require ${pkg}/init (its CommonJS setup) does not reach an ES module app's ioredis: no Redis span, no warning`, async () => {
      const run = await runUnder(ddTraceRequire(pkg), 'express');
      expectFeaturesWork(run);
      expect(tracerWarnings(run)).toEqual([]);
      expect(ddSpans().some((s) => s.resource === 'GET /work')).toBe(true);
      expect(ddRawCommands()).toEqual([]);
    });

    it("on a cluster: every feature works, one warning, the script calls' arguments in the spans", async () => {
      const run = await runUnder(ddTrace(pkg), 'express', 'cluster');
      expectFeaturesWork(run);
      expect(tracerWarnings(run)).toHaveLength(1);
      const scripts = ddRawCommands().filter((c) => c.startsWith('EVALSHA '));
      expect(scripts.some((c) => c.includes(run.secrets.session))).toBe(true);
      expect(scripts.filter((c) => c.includes(run.result.work.body.lockToken)).length).toBeGreaterThanOrEqual(3);
    });
  });
}

describe('elastic-apm-node 4 (-r elastic-apm-node/start, its ES module loader)', () => {
  it.each(PLATFORMS)(
    'on %s: every feature works, no Redis span (ioredis 6 is not instrumented), no warning',
    async (platform) => {
      const run = await runUnder(elastic(), platform);
      expectFeaturesWork(run);
      expect(tracerWarnings(run)).toEqual([]);
      const events = elasticEvents();
      dump(`elastic-${platform}`, events);
      const transactions = events.flatMap((e) => (e.transaction ? [String(e.transaction.name)] : []));
      expect(transactions).toEqual(expect.arrayContaining(['GET /work', 'GET /l1', 'GET /done']));
      expect(events.filter((e) => e.span && e.span.subtype === 'redis')).toEqual([]);
      for (const secret of [...Object.values(run.secrets), run.result.work.body.lockToken])
        expect(sentText()).not.toContain(secret);
      // the agent logged no error of its own (it reached the stand-in APM server)
      expect(run.log.filter((l) => l.includes('"log.level":"error"'))).toEqual([]);
    },
  );
});
