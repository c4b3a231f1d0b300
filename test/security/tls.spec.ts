/**
 * TLS: `connection.tls` (or a rediss:// url) against a private redis-server with a TLS port and a throwaway CA.
 * Runs only when this redis-server was built with TLS and `openssl` is on PATH (docs/security.md has the setup);
 * otherwise it fails under CI (Debian's redis-server has TLS: a missing capability there is a broken CI) and is
 * skipped with the reason in its title only on a developer's machine.
 */
import 'reflect-metadata';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REDIS_CLIENT, RedisUnavailableError } from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { findOnPath, getFreePort, startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { within } from '../support/timing.js';

function tlsSupport(): string | undefined {
  if (!findOnPath('openssl')) return 'openssl is not on PATH';
  const probe = spawnSync('redis-server', ['--port', '0', '--tls-port', '1', '--tls-cert-file', '/nonexistent'], {
    encoding: 'utf8',
    timeout: 5_000,
  });
  const out = `${probe.stdout}${probe.stderr}`;
  // A TLS build complains about the missing key file; a build without TLS rejects the tls-port directive itself.
  if (/tls-key-file|Failed to configure TLS/i.test(out)) return undefined;
  if (/Bad directive|wrong number of arguments/i.test(out)) return 'redis-server was built without TLS';
  return `cannot tell whether redis-server supports TLS: ${out.slice(0, 200)}`;
}

const unsupported = tlsSupport();

function openssl(dir: string, args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.stderr}`);
}

if (unsupported && process.env.CI)
  it('redis-server supports TLS and openssl is installed (CI must run the TLS tests)', () => {
    throw new Error(`TLS tests cannot run under CI: ${unsupported}`);
  });

(unsupported ? describe.skip : describe)(`TLS connections${unsupported ? ` (skipped: ${unsupported})` : ''}`, () => {
  let dir: string;
  let server: RedisServerHandle;
  let tlsPort: number;
  let ca: string;
  let otherCa: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rtk-tls-'));
    writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    openssl(dir, [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'ca.key',
      '-out',
      'ca.crt',
      '-days',
      '2',
      '-subj',
      '/CN=rtk-test-ca',
    ]);
    openssl(dir, [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'other.key',
      '-out',
      'other.crt',
      '-days',
      '2',
      '-subj',
      '/CN=rtk-other-ca',
    ]);
    openssl(dir, [
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'server.key',
      '-out',
      'server.csr',
      '-subj',
      '/CN=127.0.0.1',
    ]);
    openssl(dir, [
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'server.crt',
      '-days',
      '2',
      '-extfile',
      'san.ext',
    ]);
    ca = readFileSync(join(dir, 'ca.crt'), 'utf8');
    otherCa = readFileSync(join(dir, 'other.crt'), 'utf8');
    tlsPort = await getFreePort();
    server = await startRedisServer({
      args: [
        '--tls-port',
        String(tlsPort),
        '--tls-cert-file',
        join(dir, 'server.crt'),
        '--tls-key-file',
        join(dir, 'server.key'),
        '--tls-ca-cert-file',
        join(dir, 'ca.crt'),
        '--tls-auth-clients',
        'no',
      ],
    });
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  afterEach(closeToolkitApps);

  it('connects with connection.tls and the CA that signed the server certificate', async () => {
    const { get } = await createToolkitApp({ target: { host: '127.0.0.1', port: tlsPort, tls: { ca } } });
    const client = get<RedisClient>(REDIS_CLIENT);
    expect(await client.set('rtk:tls:k', 'v')).toBe('OK');
    expect(await client.get('rtk:tls:k')).toBe('v');
  });

  it('connects with a rediss:// url plus the CA', async () => {
    const { get } = await createToolkitApp({ target: { url: `rediss://127.0.0.1:${tlsPort}`, tls: { ca } } });
    expect(await get<RedisClient>(REDIS_CLIENT).ping()).toBe('PONG');
  });

  it('refuses a server certificate it cannot verify (wrong CA): RedisUnavailableError, no silent fallback', async () => {
    const error = await createToolkitApp({
      target: { host: '127.0.0.1', port: tlsPort, tls: { ca: otherCa } },
      connectTimeout: 1_000,
      commandTimeout: 300,
    }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(RedisUnavailableError);
    expect((error as Error).message).toMatch(/certificate|self.signed|verify/i);
  });

  it('a plaintext client on the TLS port fails at bootstrap within its budget instead of hanging', async () => {
    const started = Date.now();
    const error = await createToolkitApp({
      target: { host: '127.0.0.1', port: tlsPort },
      connectTimeout: 500,
      commandTimeout: 300,
    }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(RedisUnavailableError);
    expect(Date.now() - started).toBeLessThan(within(500 + 300));
  });
});
