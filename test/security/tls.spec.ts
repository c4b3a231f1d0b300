/**
 * TLS: `connection.tls` (or a rediss:// url) against a private redis-server with a TLS port and a throwaway CA.
 * Runs only when this redis-server was built with TLS and `openssl` is on PATH (docs/security.md has the setup);
 * otherwise it fails under CI (Debian's redis-server has TLS: a missing capability there is a broken CI) and is
 * skipped with the reason in its title only on a developer's machine.
 */
import 'reflect-metadata';
import type { LoggerService } from '@nestjs/common';
import { REDIS_CLIENT, RedisUnavailableError } from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { getFreePort, startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { makeTlsFiles, tlsServerArgs, tlsSupport, type TlsFiles } from '../support/tls-certs.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { within } from '../support/timing.js';

const unsupported = tlsSupport();

if (unsupported && process.env.CI)
  it('redis-server supports TLS and openssl is installed (CI must run the TLS tests)', () => {
    throw new Error(`TLS tests cannot run under CI: ${unsupported}`);
  });

(unsupported ? describe.skip : describe)(`TLS connections${unsupported ? ` (skipped: ${unsupported})` : ''}`, () => {
  let files: TlsFiles;
  let server: RedisServerHandle;
  let tlsPort: number;
  let ca: string;
  let otherCa: string;

  beforeAll(async () => {
    files = makeTlsFiles();
    ca = files.ca;
    otherCa = files.otherCa;
    tlsPort = await getFreePort();
    server = await startRedisServer({ args: tlsServerArgs(files, tlsPort) });
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
    files?.remove();
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

  // ioredis turned TLS on only for the exact spelling `rediss://`: `REDISS://` connected in plaintext, password
  // included (before the fix this client reached the plaintext port and the app booted).
  it.each(['REDISS', 'Rediss'])(
    '%s:// means TLS too: on a plaintext port the start fails, never plaintext',
    async (scheme) => {
      const error = await createToolkitApp({
        target: { url: `${scheme}://127.0.0.1:${server.port}` },
        connectTimeout: 500,
        commandTimeout: 300,
      }).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(error).toBeInstanceOf(RedisUnavailableError);
    },
  );

  it('REDISS:// with the CA reaches the TLS port', async () => {
    const { get } = await createToolkitApp({ target: { url: `REDISS://127.0.0.1:${tlsPort}`, tls: { ca } } });
    expect(await get<RedisClient>(REDIS_CLIENT).ping()).toBe('PONG');
  });

  it('tls.rejectUnauthorized: false is said at start (a warning naming the option), never silently', async () => {
    const warnings: string[] = [];
    const logger: LoggerService = {
      log: () => undefined,
      error: () => undefined,
      warn: (message: unknown) => void warnings.push(String(message)),
    };
    await createToolkitApp({
      target: { host: '127.0.0.1', port: tlsPort, tls: { rejectUnauthorized: false } },
      logger,
    });
    expect(warnings.filter((w) => /certificate verification is off.*tls\.rejectUnauthorized/.test(w))).toHaveLength(1);
    warnings.length = 0;
    await createToolkitApp({ target: { host: '127.0.0.1', port: tlsPort, tls: { ca } }, logger });
    expect(warnings.filter((w) => /rejectUnauthorized/.test(w))).toEqual([]);
  });

  it('tls: false with a rediss:// url is refused as contradictory options', async () => {
    await expect(createToolkitApp({ target: { url: `rediss://127.0.0.1:${tlsPort}`, tls: false } })).rejects.toThrow(
      /connection\.tls.*rediss/,
    );
  });
});
