/**
 * What `nestjs-redis-toolkit/testing` throws on purpose is a typed `RedisToolkitError` with a stable code, so a test
 * can tell the harness's refusals from its own failures: a server handle used in the wrong state, the raw client the
 * handles use (flush, readiness) meeting a refused AUTH or a peer that is not Redis, and a misspelled option of
 * createRedisTestingModule (startRedisServer's and startRedisCluster's: test/foundation/options-async-otel-testing).
 */
import { createServer, type Server } from 'node:net';
import { InvalidOptionsError, RedisReplyError, RedisToolkitError, RedisUnavailableError } from '../../lib/index.js';
import * as testing from '../../lib/testing/index.js';
import { rawCommand, rawCommands } from '../../lib/testing/testing.resp.js';
import { errorOf } from '../support/errors.js';

// A namespace import, so that this file also ran before the error class existed (and failed on its code first).
const { createRedisTestingModule, startRedisServer } = testing;
type Typed = Error & { code?: string };

function expectStateError(err: unknown, message: RegExp): void {
  // before: a plain Error with the same text
  expect((err as Typed | undefined)?.code).toBe('E_REDIS_SERVER_STATE');
  expect(err).toBeInstanceOf(RedisToolkitError);
  expect(err).toBeInstanceOf(testing.RedisServerStateError);
  expect((err as Error).message).toMatch(message);
}

describe('a server handle used in the wrong state: RedisServerStateError', () => {
  it('restart() while it runs; the server runs on', async () => {
    const server = await startRedisServer();
    try {
      expectStateError(await errorOf(() => server.restart()), /redis-server on port \d+ is already running/);
      expect(server.isRunning()).toBe(true);
      await server.flush();
    } finally {
      await server.stop();
    }
  });

  it.each(['pause', 'resume', 'flush'] as const)('%s() once stopped; restart() then brings it back', async (call) => {
    const server = await startRedisServer();
    try {
      await server.stop();
      const expected = new RegExp(`^cannot ${call}: redis-server on port ${server.port} is not running$`);
      expectStateError(await errorOf(() => server[call]()), expected);
      await server.restart();
      expect(server.isRunning()).toBe(true);
      await server[call]();
    } finally {
      await server.stop();
    }
  });
});

describe('the raw client of the handles: a refused AUTH and a peer that is not Redis', () => {
  it('a wrong password: RedisReplyError with the reply code (WRONGPASS), the password not shown', async () => {
    const server = await startRedisServer({ password: 'right-pass-31c' });
    try {
      const err = await errorOf(() => rawCommand(server.port, ['PING'], { auth: { password: 'wrong-pass-5d0' } }));
      // before: a plain Error "AUTH failed on ..."
      expect((err as Typed).code).toBe('E_REDIS_REPLY');
      expect(err).toBeInstanceOf(RedisReplyError);
      expect((err as RedisReplyError).replyCode).toBe('WRONGPASS');
      expect((err as Error).message).toMatch(/^AUTH failed on 127\.0\.0\.1:\d+: WRONGPASS/);
      expect((err as Error).message).not.toMatch(/right-pass|wrong-pass/);
      expect(await rawCommand(server.port, ['PING'], { auth: { password: 'right-pass-31c' } })).toBe('PONG');
    } finally {
      await server.stop();
    }
  });

  /** A loopback TCP server that answers the first bytes it reads with `answer`, then closes. */
  async function peer(answer: string): Promise<{ port: number; server: Server }> {
    const server = createServer((socket) => socket.once('data', () => socket.end(answer)));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { port: (server.address() as { port: number }).port, server };
  }

  it.each([
    ['closes after one of two replies', '+PONG\r\n', /closed the connection after 1\/2 replies/],
    [
      'answers with something other than RESP (HTTP)',
      'HTTP/1.1 400 Bad Request\r\n\r\n',
      /unexpected RESP type byte "H"/,
    ],
  ])('a peer that %s: RedisUnavailableError', async (_case, answer, message) => {
    const { port, server } = await peer(answer);
    try {
      const err = await errorOf(() => rawCommands(port, [['PING'], ['PING']]));
      // before: a plain Error
      expect((err as Typed).code).toBe('E_REDIS_UNAVAILABLE');
      expect(err).toBeInstanceOf(RedisUnavailableError);
      expect((err as Error).message).toMatch(message);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('createRedisTestingModule: a misspelled option is refused at the call, naming it', () => {
  const redis = { url: 'redis://127.0.0.1:1' };
  it.each([
    ['provders', { redis, provders: [] }, /provders is not a known option \(did you mean providers\?\)/],
    ['toolkt', { redis, toolkt: { keyPrefix: 'x:' } }, /toolkt is not a known option \(did you mean toolkit\?\)/],
    // before: "redis must be a server or cluster ..., got undefined", the misspelled key not named
    ['redsi', { redsi: redis }, /redsi is not a known option \(did you mean redis\?\)/],
    // a toolkit option beside redis, as forRoot takes it: told where it goes
    ['keyPrefix', { redis, keyPrefix: 'x:' }, /keyPrefix is a toolkit option: give it under toolkit/],
    ['connection', { redis, connection: redis }, /connection is not an option here: redis says where to connect/],
  ])('%s: InvalidOptionsError', async (_case, options, message) => {
    const err = await errorOf(() => createRedisTestingModule(options as never));
    // before (all but redsi): a plain Error from Nest, "Invalid property 'provders' passed into the @Module()
    // decorator", thrown by Test.createTestingModule
    expect((err as Typed | undefined)?.code).toBe('E_INVALID_OPTIONS');
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toMatch(/^createRedisTestingModule: /);
    expect((err as Error).message).toMatch(message);
  });

  it('every key it knows still passes: redis, toolkit and the module metadata (imports, providers, ...)', async () => {
    const builder = createRedisTestingModule({
      redis,
      toolkit: { keyPrefix: 'known:', lazyConnect: true },
      imports: [],
      providers: [],
      controllers: [],
      exports: [],
    });
    const moduleRef = await builder.compile();
    await moduleRef.close();
  });
});
