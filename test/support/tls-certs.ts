/**
 * A throwaway CA, a server certificate for 127.0.0.1/localhost signed by it, and a second unrelated CA, generated with
 * openssl in a temp dir (removed by `remove()`). `tlsSupport()` says why TLS tests cannot run here, if they cannot.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findOnPath } from './redis-server.js';

export interface TlsFiles {
  dir: string;
  /** Paths of the server's certificate, key and the CA that signed it (for redis-server's tls-* directives). */
  certFile: string;
  keyFile: string;
  caFile: string;
  /** PEM of the CA that signed the server certificate. */
  ca: string;
  /** PEM of a CA that signed nothing here: a client trusting only it must refuse the server. */
  otherCa: string;
  remove(): void;
}

/** undefined when this redis-server has TLS and openssl is on PATH; else the reason. */
export function tlsSupport(): string | undefined {
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

function openssl(dir: string, args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.stderr}`);
}

const selfSigned = (name: string, cn: string): string[] =>
  [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.crt`,
    '-days',
    '2',
  ].concat(['-subj', `/CN=${cn}`]);

export function makeTlsFiles(): TlsFiles {
  const dir = mkdtempSync(join(tmpdir(), 'rtk-tls-'));
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl(dir, selfSigned('ca', 'rtk-test-ca'));
  openssl(dir, selfSigned('other', 'rtk-other-ca'));
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
  return {
    dir,
    certFile: join(dir, 'server.crt'),
    keyFile: join(dir, 'server.key'),
    caFile: join(dir, 'ca.crt'),
    ca: readFileSync(join(dir, 'ca.crt'), 'utf8'),
    otherCa: readFileSync(join(dir, 'other.crt'), 'utf8'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** redis-server arguments for a TLS port with these files (clients need no certificate of their own). */
export function tlsServerArgs(files: TlsFiles, tlsPort: number): string[] {
  return [
    '--tls-port',
    String(tlsPort),
    '--tls-cert-file',
    files.certFile,
    '--tls-key-file',
    files.keyFile,
    '--tls-ca-cert-file',
    files.caFile,
    '--tls-auth-clients',
    'no',
  ];
}
