import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Controller, Get, Header, Headers, Res } from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import request from 'supertest';
import { HttpCacheInterceptor } from '../../lib/advanced.js';
import { recordingLogger } from '../support/recording-logger.js';
import { PLATFORMS, type Platform, closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

/**
 * HttpCacheInterceptor and `Vary` (RFC 9111 §4.1): a response stored for a request is served only to requests that
 * send the same values of the request headers it varies by. Before, the URL alone was the key: the French page went
 * to the next visitor asking in English, whatever the route said.
 */

afterEach(closeToolkitApps);

/** Express's `res` and Fastify's `reply` both have `header(name, value)`. */
interface HeaderResponse {
  header(name: string, value: string): unknown;
}

const calls = { declared: 0, handler: 0, cors: 0, star: 0, plain: 0, two: 0 };
const greeting = (language: string | undefined) => (language?.startsWith('fr') ? 'bonjour' : 'hello');

@Controller('vary')
class VaryController {
  /** The route says so itself: Nest sets it on every response of the route. */
  @Get('declared')
  @Header('Vary', 'Accept-Language')
  declared(@Headers('accept-language') language?: string): { text: string; n: number } {
    return { text: greeting(language), n: ++calls.declared };
  }

  /** The handler sets it on its own response: only known once a response of the route has been seen. */
  @Get('handler')
  handler(
    @Headers('accept-language') language: string | undefined,
    @Res({ passthrough: true }) res: HeaderResponse,
  ): { text: string; n: number } {
    res.header('Vary', 'Accept-Language');
    return { text: greeting(language), n: ++calls.handler };
  }

  /** Two headers, one of them absent from some requests. */
  @Get('two')
  @Header('Vary', 'Accept-Language, X-Tenant')
  two(
    @Headers('accept-language') language: string | undefined,
    @Headers('x-tenant') tenant: string | undefined,
  ): { text: string; tenant: string; n: number } {
    return { text: greeting(language), tenant: tenant ?? '-', n: ++calls.two };
  }

  /** CORS with the caller's origin reflected: the platform's CORS sets `Vary: Origin` before the handler runs. */
  @Get('cors')
  cors(@Headers('origin') origin?: string): { origin: string; n: number } {
    return { origin: origin ?? '-', n: ++calls.cors };
  }

  @Get('star')
  @Header('Vary', '*')
  star(): { n: number } {
    return { n: ++calls.star };
  }

  @Get('plain')
  plain(@Headers('accept-language') language?: string): { text: string; n: number } {
    return { text: greeting(language), n: ++calls.plain };
  }
}

async function varyApp(platform: Platform, cors = false) {
  const logs = recordingLogger();
  const app = await createToolkitApp({
    keyPrefix: `rtk-hv${randomBytes(4).toString('hex')}:`,
    cache: { defaultTtl: 60_000, beta: 0 },
    controllers: [VaryController],
    providers: [{ provide: APP_INTERCEPTOR, useClass: HttpCacheInterceptor }],
    http: true,
    platform,
    logger: logs.logger,
    beforeInit: (nest) => {
      if (cors) nest.enableCors({ origin: true });
    },
  });
  return { http: request(app.app.getHttpServer()), warnings: logs.warnings };
}

/** [X-Cache, body] of a response. */
const seen = (res: request.Response) => [res.headers['x-cache'], res.body];

describe.each(PLATFORMS)('HttpCacheInterceptor and Vary on %s', (platform) => {
  beforeEach(() => {
    for (const k of Object.keys(calls) as (keyof typeof calls)[]) calls[k] = 0;
  });

  it("keys a route's responses by the request headers its @Header('Vary') names", async () => {
    const { http } = await varyApp(platform);
    const ask = (language: string) => http.get('/vary/declared').set('Accept-Language', language).expect(200);
    const answers = [await ask('fr-FR'), await ask('en-GB'), await ask('fr-FR'), await ask('en-GB')];
    // before: the English visitor got ['HIT', { text: 'bonjour', n: 1 }]
    expect(answers.map(seen)).toEqual([
      ['MISS', { text: 'bonjour', n: 1 }],
      ['MISS', { text: 'hello', n: 2 }],
      ['HIT', { text: 'bonjour', n: 1 }],
      ['HIT', { text: 'hello', n: 2 }],
    ]);
    expect(answers.map((res) => res.headers.vary)).toEqual(Array(4).fill('Accept-Language'));

    // a URL whose key is just under the 1 KiB a key may be: its variants still get keys of their own
    const long = `/vary/declared?q=${'x'.repeat(1000)}`;
    const askLong = (language: string) => http.get(long).set('Accept-Language', language).expect(200);
    const longAnswers = [await askLong('fr'), await askLong('en'), await askLong('fr')];
    expect(longAnswers.map(seen)).toEqual([
      ['MISS', { text: 'bonjour', n: 3 }],
      ['MISS', { text: 'hello', n: 4 }],
      ['HIT', { text: 'bonjour', n: 3 }],
    ]);
  });

  it('keys by every header named, an absent one apart from an empty one', async () => {
    const { http } = await varyApp(platform);
    const ask = (language: string, tenant?: string) => {
      const req = http.get('/vary/two').set('Accept-Language', language);
      return (tenant === undefined ? req : req.set('X-Tenant', tenant)).expect(200);
    };
    const answers = [
      await ask('fr', 'a'),
      await ask('fr', 'b'),
      await ask('fr'),
      await ask('en', 'a'),
      await ask('fr', 'a'),
      await ask('fr'),
      await ask('fr', ''),
    ];
    expect(answers.map(seen)).toEqual([
      ['MISS', { text: 'bonjour', tenant: 'a', n: 1 }],
      ['MISS', { text: 'bonjour', tenant: 'b', n: 2 }],
      ['MISS', { text: 'bonjour', tenant: '-', n: 3 }],
      ['MISS', { text: 'hello', tenant: 'a', n: 4 }],
      ['HIT', { text: 'bonjour', tenant: 'a', n: 1 }],
      ['HIT', { text: 'bonjour', tenant: '-', n: 3 }],
      // an empty X-Tenant is not an absent one
      ['MISS', { text: 'bonjour', tenant: '', n: 5 }],
    ]);
  });

  it('learns a Vary the handler sets itself: that response is not stored, and the next ones are keyed by it', async () => {
    const { http } = await varyApp(platform);
    const ask = (language: string) => http.get('/vary/handler').set('Accept-Language', language).expect(200);
    const answers = [await ask('fr'), await ask('en'), await ask('fr'), await ask('en'), await ask('fr')];
    // before: every later visitor got the first one's French page as a HIT
    expect(answers.map(seen)).toEqual([
      ['MISS', { text: 'bonjour', n: 1 }],
      ['MISS', { text: 'hello', n: 2 }],
      ['MISS', { text: 'bonjour', n: 3 }],
      ['HIT', { text: 'hello', n: 2 }],
      ['HIT', { text: 'bonjour', n: 3 }],
    ]);
    // a hit says what it varies by, as the handler's own response did (a CDN in front must not share it either)
    expect(answers.map((res) => res.headers.vary)).toEqual(Array(5).fill('Accept-Language'));
  });

  it("keys by a Vary that middleware or the platform's CORS set before the handler (Origin)", async () => {
    const { http } = await varyApp(platform, true);
    const ask = (origin: string) => http.get('/vary/cors').set('Origin', origin).expect(200);
    const answers = [await ask('https://a.example'), await ask('https://b.example'), await ask('https://a.example')];
    expect(answers.map(seen)).toEqual([
      ['MISS', { origin: 'https://a.example', n: 1 }],
      ['MISS', { origin: 'https://b.example', n: 2 }],
      ['HIT', { origin: 'https://a.example', n: 1 }],
    ]);
    expect(answers.map((res) => res.headers['access-control-allow-origin'])).toEqual([
      'https://a.example',
      'https://b.example',
      'https://a.example',
    ]);
  });

  it('never stores a response that varies by anything (Vary: *): BYPASS, no warning', async () => {
    const { http, warnings } = await varyApp(platform);
    const answers = [await http.get('/vary/star').expect(200), await http.get('/vary/star').expect(200)];
    expect(answers.map(seen)).toEqual([
      ['BYPASS', { n: 1 }],
      ['BYPASS', { n: 2 }],
    ]);
    expect(warnings.filter((w) => w.includes('VaryController'))).toEqual([]);
  });

  it('keys by the URL alone where nothing says Vary, as before', async () => {
    const { http } = await varyApp(platform);
    const ask = (language: string) => http.get('/vary/plain').set('Accept-Language', language).expect(200);
    const answers = [await ask('fr'), await ask('en')];
    expect(answers.map(seen)).toEqual([
      ['MISS', { text: 'bonjour', n: 1 }],
      ['HIT', { text: 'bonjour', n: 1 }],
    ]);
  });
});
