/**
 * Redis AUTH with an ACL user and a password taken from configuration. A private server has the default user
 * switched off, so only the ACL user gets in. A wrong password must stop the bootstrap with a clear
 * RedisUnavailableError that names the address, and the password (right or wrong) must never appear in an error
 * message, an inspected error (cause chain included) or anything logged.
 */
import 'reflect-metadata';
import { ConfigModule, ConfigService } from '@nestjs/config';
import type { LoggerService } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { inspect } from 'node:util';
import { REDIS_CLIENT, RedisToolkitModule, RedisUnavailableError, type RedisToolkitOptions } from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { usePrivateRedis } from '../support/private-servers.js';
import { rawCommand } from '../support/resp.js';

const USER = 'rtk-app';
const PASSWORD = `S3cret-${Math.random().toString(36).slice(2)}-pw`;
const WRONG = `Wr0ng-${Math.random().toString(36).slice(2)}-pw`;

const redis = usePrivateRedis({ aclUser: { name: USER, password: PASSWORD }, args: ['--user', 'default', 'off'] });

/** A Nest logger that keeps every line. */
class CapturingLogger implements LoggerService {
  readonly lines: string[] = [];
  private keep(level: string, args: unknown[]): void {
    this.lines.push(`${level} ${args.map((a) => (typeof a === 'string' ? a : inspect(a, { depth: 5 }))).join(' ')}`);
  }
  log(...args: unknown[]): void {
    this.keep('log', args);
  }
  error(...args: unknown[]): void {
    this.keep('error', args);
  }
  warn(...args: unknown[]): void {
    this.keep('warn', args);
  }
  debug(...args: unknown[]): void {
    this.keep('debug', args);
  }
  verbose(...args: unknown[]): void {
    this.keep('verbose', args);
  }
}

/** Boots the module with options from a ConfigService (as an app reading env vars would). */
async function bootFromConfig(
  env: Record<string, string>,
  logger: CapturingLogger,
  build: (c: ConfigService) => RedisToolkitOptions['connection'],
) {
  const moduleRef = await Test.createTestingModule({
    imports: [
      ConfigModule.forRoot({ ignoreEnvFile: true, load: [() => env] }),
      RedisToolkitModule.forRootAsync({
        imports: [ConfigModule],
        inject: [ConfigService],
        useFactory: (config: ConfigService) => ({
          connection: build(config),
          connectTimeout: 1_000,
          commandTimeout: 500,
        }),
      }),
    ],
  }).compile();
  const app = moduleRef.createNestApplication({ logger });
  try {
    await app.init();
  } catch (err) {
    await app.close().catch(() => undefined);
    throw err;
  }
  return app;
}

function expectNoSecret(texts: string[], ...secrets: string[]): void {
  for (const text of texts) for (const secret of secrets) expect(text).not.toContain(secret);
}

describe('Redis AUTH with an ACL user (password from config)', () => {
  it('connects as the ACL user with host/port/username/password', async () => {
    const logger = new CapturingLogger();
    const app = await bootFromConfig(
      { REDIS_PORT: String(redis.server.port), REDIS_USER: USER, REDIS_PASSWORD: PASSWORD },
      logger,
      (c) => ({
        host: '127.0.0.1',
        port: Number(c.getOrThrow('REDIS_PORT')),
        username: c.getOrThrow<string>('REDIS_USER'),
        password: c.getOrThrow<string>('REDIS_PASSWORD'),
      }),
    );
    try {
      const client = app.get<RedisClient>(REDIS_CLIENT);
      expect(await client.call('ACL', 'WHOAMI')).toBe(USER);
      expect(await client.set('rtk:sec:auth', '1')).toBe('OK');
    } finally {
      await app.close();
    }
    expectNoSecret(logger.lines, PASSWORD);
  });

  it('connects with credentials in a redis:// url', async () => {
    const logger = new CapturingLogger();
    const app = await bootFromConfig({ REDIS_URL: redis.server.url }, logger, (c) => ({
      url: c.getOrThrow<string>('REDIS_URL'),
    }));
    try {
      expect(await app.get<RedisClient>(REDIS_CLIENT).call('ACL', 'WHOAMI')).toBe(USER);
    } finally {
      await app.close();
    }
  });

  it.each([
    ['a wrong password', (port: number) => ({ host: '127.0.0.1', port, username: USER, password: WRONG })],
    ['a wrong password in the url', (port: number) => ({ url: `redis://${USER}:${WRONG}@127.0.0.1:${port}` })],
    ['no credentials (default user is off)', (port: number) => ({ host: '127.0.0.1', port })],
    [
      'the right password for an unknown user',
      (port: number) => ({ host: '127.0.0.1', port, username: 'nobody', password: PASSWORD }),
    ],
  ])('%s: bootstrap fails with RedisUnavailableError naming the address, never the password', async (_, connection) => {
    const logger = new CapturingLogger();
    const port = redis.server.port;
    const error = await bootFromConfig({}, logger, () => connection(port)).then(
      (app) => app.close().then(() => undefined),
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(RedisUnavailableError);
    const err = error as RedisUnavailableError;
    expect(err.code).toBe('E_REDIS_UNAVAILABLE');
    expect(err.message).toContain(`redis://127.0.0.1:${port}`);
    expect(err.message).toMatch(/WRONGPASS|NOAUTH|NOPERM|auth/i);
    // Everything a user might print: message, stack, String(), inspect() with the cause chain, JSON.
    expectNoSecret(
      [err.message, String(err.stack), String(err), inspect(err, { depth: 10 }), JSON.stringify(err), ...logger.lines],
      WRONG,
      PASSWORD,
    );
  });

  it('after its connection is killed it re-authenticates on reconnect, and logs no password', async () => {
    const logger = new CapturingLogger();
    const app = await bootFromConfig({}, logger, () => ({
      host: '127.0.0.1',
      port: redis.server.port,
      username: USER,
      password: PASSWORD,
    }));
    try {
      const client = app.get<RedisClient>(REDIS_CLIENT);
      expect(await client.ping()).toBe('PONG');
      const before = Number(await client.call('CLIENT', 'ID'));
      let readies = 0;
      const ready = new Promise<void>((resolve) =>
        client.on('ready', () => {
          readies++;
          resolve();
        }),
      );
      // Kill every connection of the ACL user from another connection (CLIENT KILL skips its caller by default, so
      // the killer must not be the client under test): the client has to reconnect and AUTH again.
      const killed = await rawCommand(redis.server.port, ['CLIENT', 'KILL', 'USER', USER], {
        auth: { username: USER, password: PASSWORD },
        timeoutMs: 10_000,
      });
      expect(Number(killed)).toBeGreaterThanOrEqual(1);
      await ready;
      expect(readies).toBeGreaterThanOrEqual(1);
      // A new connection, authenticated as the ACL user again (the default user is off: without AUTH it gets NOAUTH).
      expect(await client.ping()).toBe('PONG');
      const after = Number(await client.call('CLIENT', 'ID'));
      expect(after).not.toBe(before);
      expect(await client.call('ACL', 'WHOAMI')).toBe(USER);
      const list = String(await client.call('CLIENT', 'LIST', 'ID', String(after), String(before)));
      expect(list).toContain(`id=${after} `);
      expect(list).toContain(`user=${USER}`);
      expect(list).not.toContain(`id=${before} `);
    } finally {
      await app.close();
    }
    expectNoSecret(logger.lines, PASSWORD);
  });
});
