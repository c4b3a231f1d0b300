import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  type CanActivate,
  Controller,
  type ExecutionContext,
  Get,
  HttpCode,
  Injectable,
  NotFoundException,
  Res,
  StreamableFile,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import request from 'supertest';
import { CacheIf, HttpCacheInterceptor, KeyBuilder, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { recordingLogger } from '../support/recording-logger.js';
import { PLATFORMS, type Platform, closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

/**
 * HttpCacheInterceptor and the requests that join a load (single-flight: a request for a URL whose handler is already
 * running for another request waits for that run instead of running its own). A response that is not stored is handed
 * to them only when it is a plain value that Nest sends on each request's own response the same way (a @CacheIf
 * refusal, a status of the route's own); a stream, a response written through @Res() or a status the handler set on
 * its own response is not: each joiner runs the handler itself. A thrown error is shared (each request's exception
 * filter answers it). Express and Fastify, real Redis.
 */

afterEach(closeToolkitApps);

/** Handler runs, and requests past the guard (guards run before interceptors), per route. */
const calls: Record<string, number> = {};
const arrived: Record<string, number> = {};
/** Lets the first run of a route's handler go on, once the test has its second request waiting on that load. */
let release: () => void = () => undefined;

/** A handler run: its number; the first one waits for release(). */
async function enter(route: string): Promise<number> {
  const n = (calls[route] = (calls[route] ?? 0) + 1);
  if (n === 1) await new Promise<void>((r) => (release = r));
  return n;
}

/** The body a stream of run `n` sends: 20 chunks, so a reader that misses some shows it. */
const chunks = (n: number) => Array.from({ length: 20 }, (_, i) => `${n}.${i};`);
const streamed = (n: number) => chunks(n).join('');

@Injectable()
class ArrivalGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const url = context.switchToHttp().getRequest<{ url: string }>().url;
    const route = url.split('/')[2] ?? '';
    arrived[route] = (arrived[route] ?? 0) + 1;
    return true;
  }
}

/** Express's `res` and Fastify's `reply` both have these. */
interface AnyResponse {
  status(code: number): unknown;
  send(body: unknown): unknown;
}

@Controller('joiners')
@UseGuards(ArrivalGuard)
@UseInterceptors(HttpCacheInterceptor)
class JoinersController {
  @Get('streamable')
  async streamable(): Promise<StreamableFile> {
    const n = await enter('streamable');
    return new StreamableFile(Readable.from(chunks(n)), { type: 'text/plain' });
  }

  /** A stream that takes a while: 20 chunks, 20 ms apart. */
  @Get('slow-stream')
  async slowStream(): Promise<StreamableFile> {
    const n = await enter('slow-stream');
    return new StreamableFile(
      Readable.from(
        (async function* () {
          for (const chunk of chunks(n)) {
            yield chunk;
            await sleep(20);
          }
        })(),
      ),
      { type: 'text/plain' },
    );
  }

  @Get('readable')
  async readable(): Promise<Readable> {
    return Readable.from(chunks(await enter('readable')));
  }

  @Get('generator')
  async generator(): Promise<AsyncGenerator<string>> {
    const n = await enter('generator');
    return (async function* () {
      yield* chunks(n);
    })();
  }

  @Get('written')
  async written(@Res() res: AnyResponse): Promise<void> {
    const n = await enter('written');
    res.send({ n });
  }

  /** Writes its response after the handler has returned (as `stream.pipe(res)` does), and returns a value. */
  @Get('written-later')
  async writtenLater(@Res() res: AnyResponse): Promise<{ n: number }> {
    const n = await enter('written-later');
    setTimeout(() => res.send({ n }), 20);
    return { n };
  }

  /** Sends its response itself although Nest would (passthrough). */
  @Get('sent')
  async sent(@Res({ passthrough: true }) res: AnyResponse): Promise<void> {
    const n = await enter('sent');
    res.send({ n });
  }

  @Get('status')
  async status(@Res({ passthrough: true }) res: AnyResponse): Promise<{ missing: number }> {
    const n = await enter('status');
    res.status(404);
    return { missing: n };
  }

  @Get('thrown')
  async thrown(): Promise<never> {
    const n = await enter('thrown');
    throw new NotFoundException(`no page ${n}`);
  }

  @Get('code')
  @HttpCode(404)
  async code(): Promise<{ gone: number }> {
    return { gone: await enter('code') };
  }

  @Get('refused')
  @CacheIf(() => false)
  async refused(): Promise<{ n: number }> {
    return { n: await enter('refused') };
  }

  @Get('stored')
  async stored(): Promise<{ n: number }> {
    return { n: await enter('stored') };
  }
}

/** What a request got: status, X-Cache and body text; or how it failed (a hang is cut after 3 s). */
type Answer = { status: number; cache: string | undefined; text: string } | string;

function answered(req: request.Test): Promise<Answer> {
  return req
    .timeout(3_000)
    .buffer(true)
    .parse((res, done) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => done(null, text));
    })
    .then(
      (res) => ({ status: res.status, cache: res.headers['x-cache'] as string | undefined, text: res.body as string }),
      (err: { timeout?: number; code?: string; message: string }) =>
        err.timeout !== undefined ? 'timed out' : `failed: ${err.code ?? err.message}`,
    );
}

async function joinersApp(platform: Platform) {
  const keyPrefix = `rtk-hj${randomBytes(4).toString('hex')}:`;
  const logs = recordingLogger();
  const app = await createToolkitApp({
    keyPrefix,
    cache: { defaultTtl: 60_000, beta: 0 },
    controllers: [JoinersController],
    http: true,
    platform,
    logger: logs.logger,
  });
  const client = app.get(RedisConnection).client as RedisClient;
  const keys = new KeyBuilder(keyPrefix);
  const http = request(app.app.getHttpServer());
  return {
    http,
    /** Two requests for /joiners/<route>: the second joins the first one's load (waiting in its handler). */
    async joined(route: string): Promise<[Answer, Answer]> {
      const path = `/joiners/${route}`;
      const first = answered(http.get(path));
      expect(await waitFor(() => calls[route] === 1, 5_000)).toBe(true);
      const second = answered(http.get(path));
      expect(await waitFor(() => arrived[route] === 2, 5_000)).toBe(true);
      // past the interceptor's Redis read (a miss): the second request now waits on the first one's load
      await sleep(50);
      release();
      return [await first, await second];
    },
    stored: async (route: string) => (await client.exists(keys.key('cache', `http:/joiners/${route}`))) === 1,
  };
}

describe.each(PLATFORMS)('HttpCacheInterceptor: the requests that joined a load, on %s', (platform) => {
  beforeEach(() => {
    for (const k of Object.keys(calls)) delete calls[k];
    for (const k of Object.keys(arrived)) delete arrived[k];
  });

  it('a StreamableFile is read once: a joiner runs its own handler and gets its own whole stream', async () => {
    const { joined, stored } = await joinersApp(platform);
    const [a, b] = await joined('streamable');
    expect([a, b]).toEqual([
      { status: 200, cache: 'MISS', text: streamed(1) },
      { status: 200, cache: 'MISS', text: streamed(2) },
    ]);
    expect([calls.streamable, await stored('streamable')]).toEqual([2, false]);
  });

  it('a StreamableFile: the joiner gets its whole stream when the first client goes away in the middle', async () => {
    const { http, stored } = await joinersApp(platform);
    const path = '/joiners/slow-stream';
    let firstGot = '';
    const first = http
      .get(path)
      .timeout(3_000)
      .buffer(true)
      .parse((res, done) => {
        res.setEncoding('utf8');
        // the first client reads one chunk, then goes away
        res.once('data', (chunk: string) => {
          firstGot = chunk;
          // the Node response under superagent's type
          (res as unknown as Readable).destroy();
          done(null, '');
        });
      })
      .then(
        () => 'ended',
        () => 'aborted',
      );
    expect(await waitFor(() => calls['slow-stream'] === 1, 5_000)).toBe(true);
    const second = answered(http.get(path));
    expect(await waitFor(() => arrived['slow-stream'] === 2, 5_000)).toBe(true);
    await sleep(50);
    release();
    await first;
    expect(firstGot.startsWith('1.0;')).toBe(true);
    const b = await second;
    expect(b).toEqual({ status: 200, cache: 'MISS', text: streamed(2) });
    expect([calls['slow-stream'], await stored('slow-stream')]).toEqual([2, false]);
  });

  it('a Node Readable is read once: a joiner runs its own handler and gets its own whole stream', async () => {
    const { joined, stored } = await joinersApp(platform);
    const [a, b] = await joined('readable');
    expect([a, b]).toEqual([
      { status: 200, cache: 'MISS', text: streamed(1) },
      { status: 200, cache: 'MISS', text: streamed(2) },
    ]);
    expect([calls.readable, await stored('readable')]).toEqual([2, false]);
  });

  it('an async generator is a stream too: sent as one, never stored, not handed to a joiner', async () => {
    const { http, joined, stored } = await joinersApp(platform);
    const [a, b] = await joined('generator');
    const later = await answered(http.get('/joiners/generator'));
    expect([a, b, later]).toEqual([
      { status: 200, cache: 'MISS', text: streamed(1) },
      { status: 200, cache: 'MISS', text: streamed(2) },
      { status: 200, cache: 'MISS', text: streamed(3) },
    ]);
    expect([calls.generator, await stored('generator')]).toEqual([3, false]);
  });

  it('a route that answers through @Res() is not cached (BYPASS): each request runs the handler on its own response', async () => {
    const { joined, stored } = await joinersApp(platform);
    const [a, b] = await joined('written');
    expect([a, b]).toEqual([
      { status: 200, cache: 'BYPASS', text: '{"n":1}' },
      { status: 200, cache: 'BYPASS', text: '{"n":2}' },
    ]);
    expect([calls.written, await stored('written')]).toEqual([2, false]);
  });

  it('a @Res() route that writes after its handler returned a value: neither joined nor stored', async () => {
    const { http, joined, stored } = await joinersApp(platform);
    const [a, b] = await joined('written-later');
    const later = await answered(http.get('/joiners/written-later'));
    expect([a, b, later]).toEqual([
      { status: 200, cache: 'BYPASS', text: '{"n":1}' },
      { status: 200, cache: 'BYPASS', text: '{"n":2}' },
      { status: 200, cache: 'BYPASS', text: '{"n":3}' },
    ]);
    expect([calls['written-later'], await stored('written-later')]).toEqual([3, false]);
  });

  it('a response the handler sent itself (passthrough): a joiner runs its own handler', async () => {
    const { joined, stored } = await joinersApp(platform);
    const [a, b] = await joined('sent');
    // the first one is sent before the interceptor answers (no X-Cache); the joiner's MISS is set before its handler
    expect([a, b]).toEqual([
      { status: 200, cache: undefined, text: '{"n":1}' },
      { status: 200, cache: 'MISS', text: '{"n":2}' },
    ]);
    expect([calls.sent, await stored('sent')]).toEqual([2, false]);
  });

  it('a status the handler set on its own response: a joiner runs its own handler and gets its own status', async () => {
    const { joined, stored } = await joinersApp(platform);
    const [a, b] = await joined('status');
    expect([a, b]).toEqual([
      { status: 404, cache: 'MISS', text: '{"missing":1}' },
      { status: 404, cache: 'MISS', text: '{"missing":2}' },
    ]);
    expect([calls.status, await stored('status')]).toEqual([2, false]);
  });

  it('a thrown HttpException is shared: the handler runs once, each request gets the 404 from its own filter', async () => {
    const { joined, stored } = await joinersApp(platform);
    const [a, b] = await joined('thrown');
    const body = JSON.stringify({ message: 'no page 1', error: 'Not Found', statusCode: 404 });
    expect([a, b]).toMatchObject([
      { status: 404, text: body },
      { status: 404, text: body },
    ]);
    expect([calls.thrown, await stored('thrown')]).toEqual([1, false]);
  });

  it("a status of the route's own (@HttpCode) is shared: the handler runs once, both get its status", async () => {
    const { joined, stored } = await joinersApp(platform);
    const [a, b] = await joined('code');
    expect([a, b]).toEqual([
      { status: 404, cache: 'MISS', text: '{"gone":1}' },
      { status: 404, cache: 'MISS', text: '{"gone":1}' },
    ]);
    expect([calls.code, await stored('code')]).toEqual([1, false]);
  });

  it('a body @CacheIf refused is shared with the joiner (the same URL and handler, at the same moment)', async () => {
    const { joined, stored } = await joinersApp(platform);
    const [a, b] = await joined('refused');
    expect([a, b]).toEqual([
      { status: 200, cache: 'MISS', text: '{"n":1}' },
      { status: 200, cache: 'MISS', text: '{"n":1}' },
    ]);
    expect([calls.refused, await stored('refused')]).toEqual([1, false]);
  });

  it('a stored response is shared as before', async () => {
    const { http, joined, stored } = await joinersApp(platform);
    const [a, b] = await joined('stored');
    const later = await answered(http.get('/joiners/stored'));
    expect([a, b, later]).toEqual([
      { status: 200, cache: 'MISS', text: '{"n":1}' },
      { status: 200, cache: 'MISS', text: '{"n":1}' },
      { status: 200, cache: 'HIT', text: '{"n":1}' },
    ]);
    expect([calls.stored, await stored('stored')]).toEqual([1, true]);
  });
});
