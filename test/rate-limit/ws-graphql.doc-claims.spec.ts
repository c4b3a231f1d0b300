/**
 * The WebSocket and GraphQL sentences of docs/rate-limit.md that no other spec held, each quoted above its test:
 * what the tracker of a socket is, per-event limits, what a refused or denied client receives, the headers of a
 * GraphQL response (several limited fields, a batch of operations), aliases and two guards on one field, and
 * subscriptions (Apollo over graphql-ws, Mercurius). Socket.IO on Express and Fastify; Apollo on Express, Mercurius on
 * Fastify. The sentences other specs hold are listed with their spec in the report of this change and in the doc.
 */
import 'reflect-metadata';
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import { UseGuards } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { GraphQLModule, Query, Resolver, Subscription } from '@nestjs/graphql';
import { MercuriusDriver, type MercuriusDriverConfig } from '@nestjs/mercurius';
import { SubscribeMessage, WebSocketGateway } from '@nestjs/websockets';
import { createClient } from 'graphql-ws';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Socket } from 'socket.io-client';
import request from 'supertest';
import WebSocket from 'ws';
import { RateLimitGuard, RateLimitService, Throttle, type RateLimitOptions } from '../../lib/index.js';
import type { GraphqlReply } from '../support/rate-limit-http.js';
import { ackOrException, connectSocket } from '../support/socket-io.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, type Platform } from '../support/toolkit-app.js';

const prefix = () => `rtk-wgc${randomBytes(4).toString('hex')}:`;
afterEach(() => closeToolkitApps());

// --- Socket.IO ------------------------------------------------------------------------------------------------------

@WebSocketGateway({ namespace: '/claims' })
@UseGuards(RateLimitGuard)
class ClaimsGateway {
  @SubscribeMessage('first')
  @Throttle({ limit: 1, ttl: 60_000 })
  first(): string {
    return 'first';
  }

  @SubscribeMessage('second')
  @Throttle({ limit: 1, ttl: 60_000 })
  second(): string {
    return 'second';
  }

  @SubscribeMessage('listed')
  @Throttle({ limit: 5, ttl: 60_000, denyList: ['198.51.100.66'] })
  listed(): string {
    return 'listed';
  }
}

describe.each(PLATFORMS)('docs/rate-limit.md on Socket.IO (%s)', (platform) => {
  const sockets: Socket[] = [];
  afterEach(() => {
    for (const s of sockets.splice(0)) s.disconnect();
  });

  const boot = async (rateLimit: RateLimitOptions = {}) => {
    const app = await createToolkitApp({
      platform,
      http: true,
      keyPrefix: prefix(),
      rateLimit,
      providers: [ClaimsGateway],
    });
    const { port } = (app.app.getHttpServer() as Server).address() as { port: number };
    const connect = (headers: Record<string, string> = {}): Promise<Socket> =>
      connectSocket(`http://127.0.0.1:${port}/claims`, sockets, { forceNew: true, extraHeaders: headers });
    return { app, connect };
  };

  /**
   * The handler's answer, or the `exception` event the refusal sent, 200 ms after it: "A refused message gets no
   * answer", and an acknowledgement after the exception would fail the test below.
   */
  const ask = (socket: Socket, event: string) => ackOrException(socket, event, 200);

  // "getRequestResponse: for WebSockets the Socket.IO handshake and no response"; "Default tracker: the socket's remote
  // address. X-Forwarded-For is read only with trustProxy": the tracker of a socket is its handshake's client address,
  // the same for every socket of that client, and X-Forwarded-For of the handshake counts only with trustProxy.
  it('the tracker of a socket is its client address: shared by its sockets; X-Forwarded-For only with trustProxy', async () => {
    const untrusted = await boot();
    const a = await untrusted.connect({ 'x-forwarded-for': '198.51.100.1' });
    const b = await untrusted.connect({ 'x-forwarded-for': '198.51.100.2' });
    expect(await ask(a, 'first')).toEqual({ ack: 'first' });
    // another socket, another forwarded address, the same peer: one counter (the peer's)
    expect(await ask(b, 'first')).toEqual({
      exception: { statusCode: 429, message: 'Too Many Requests', retryAfterMs: expect.any(Number) },
    });
    await closeToolkitApps();

    const trusted = await boot({ trustProxy: true });
    const c = await trusted.connect({ 'x-forwarded-for': '198.51.100.1' });
    const d = await trusted.connect({ 'x-forwarded-for': '198.51.100.2' });
    const e = await trusted.connect({ 'x-forwarded-for': '198.51.100.1' });
    expect(await ask(c, 'first')).toEqual({ ack: 'first' });
    expect(await ask(d, 'first')).toEqual({ ack: 'first' });
    expect((await ask(e, 'first')).exception).toMatchObject({ statusCode: 429 });
    // the counter is the client's address and the handler's (Class.handler:name), as for an HTTP route
    const rl = trusted.app.get(RateLimitService);
    const policy = { limit: 1, ttl: 60_000 };
    const peek = async (key: string) =>
      (await rl.peekAll([{ key, scope: 'ClaimsGateway.first:default', policy }])).results[0].remaining;
    expect([await peek('198.51.100.1'), await peek('198.51.100.2'), await peek('198.51.100.3')]).toEqual([0, 0, 1]);
  });

  // "The default counter is per route (<Controller>.<handler>:<name>)": per event handler on a gateway. Two events of
  // the same policy keep counters of their own; a refused event leaves the other as it was.
  it('per-event limits: each @SubscribeMessage handler has its own counter', async () => {
    const { connect } = await boot();
    const socket = await connect();
    const answers = [];
    for (const event of ['first', 'first', 'second', 'second']) answers.push(await ask(socket, event));
    expect(answers).toEqual([
      { ack: 'first' },
      { exception: { statusCode: 429, message: 'Too Many Requests', retryAfterMs: expect.any(Number) } },
      { ack: 'second' },
      { exception: { statusCode: 429, message: 'Too Many Requests', retryAfterMs: expect.any(Number) } },
    ]);
    const { retryAfterMs } = answers[1].exception as { retryAfterMs: number };
    expect(retryAfterMs).toBeGreaterThan(55_000);
    expect(retryAfterMs).toBeLessThanOrEqual(60_000);
  });

  // "A refused message gets no answer; the client receives an exception event with { statusCode: 429, message: 'Too Many
  // Requests', retryAfterMs }"; "rateLimit.errorMessage (the refusal message ...)"; "denyList: ... (a WsException with
  // that payload on WebSockets)"; "Denied WebSocket messages get no acknowledgement".
  it('a refusal is an exception event with the errorMessage, and no answer; a denied client gets the 403 payload', async () => {
    const { connect } = await boot({ errorMessage: 'Slow down', trustProxy: true });
    const socket = await connect({ 'x-forwarded-for': '198.51.100.9' });
    expect(await ask(socket, 'first')).toEqual({ ack: 'first' });
    expect(await ask(socket, 'first')).toEqual({
      exception: { statusCode: 429, message: 'Slow down', retryAfterMs: expect.any(Number) },
    });
    const denied = await connect({ 'x-forwarded-for': '198.51.100.66' });
    expect(await ask(denied, 'listed')).toEqual({ exception: { statusCode: 403, message: 'Forbidden' } });
    expect(await ask(socket, 'listed')).toEqual({ ack: 'listed' });
  });
});

// --- GraphQL --------------------------------------------------------------------------------------------------------

/** How many times each resolver ran. */
const runs = { limited: 0, other: 0, ticks: 0 };

@Resolver()
class ClaimsResolver {
  @Query(() => String)
  @Throttle({ name: 'x', limit: 5, ttl: 60_000 })
  limited(): string {
    runs.limited++;
    return 'ok';
  }

  @Query(() => String)
  @Throttle({ name: 'y', limit: 1, ttl: 60_000 })
  other(): string {
    runs.other++;
    return 'other';
  }

  @Subscription(() => String)
  @Throttle({ name: 'sub', limit: 1, ttl: 60_000 })
  ticks(): AsyncIterator<{ ticks: string }> {
    runs.ticks++;
    return (async function* () {
      for (let i = 1; i <= 3; i++) yield { ticks: `tick ${i}` };
    })();
  }
}

/** ClaimsResolver under its own guard as well as the global one. */
@Resolver()
@UseGuards(RateLimitGuard)
class GuardedResolver {
  @Query(() => String)
  @Throttle({ name: 'z', limit: 2, ttl: 60_000 })
  guarded(): string {
    return 'guarded';
  }
}

// "GraphQL resolvers (@nestjs/graphql, an optional peer the toolkit never imports: it reads the resolver's context
// argument)": no file of lib/ names a GraphQL package in an import, a type-only one included.
it('no file of lib/ imports @nestjs/graphql, graphql or a driver', () => {
  const lib = resolve(dirname(fileURLToPath(import.meta.url)), '../../lib');
  const files = readdirSync(lib, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  expect(files.length).toBeGreaterThan(50);
  const graphqlPackage =
    /(from\s+|import\s*\(\s*|require\s*\(\s*)'(@nestjs\/(graphql|apollo|mercurius)|graphql|mercurius|@apollo\/[^']+)'/;
  const offenders = files.filter((f) => graphqlPackage.test(readFileSync(join(lib, f), 'utf8')));
  expect(offenders).toEqual([]);
  // the check can fail: a spec that imports one is found by it
  expect(graphqlPackage.test(readFileSync(fileURLToPath(import.meta.url), 'utf8'))).toBe(true);
});

const DRIVERS = [
  ['express', 'Apollo'],
  ['fastify', 'Mercurius'],
] as const;

function graphqlModule(platform: Platform) {
  return platform === 'express'
    ? GraphQLModule.forRoot<ApolloDriverConfig>({
        driver: ApolloDriver,
        autoSchemaFile: true,
        subscriptions: { 'graphql-ws': true },
        allowBatchedHttpRequests: true,
      })
    : GraphQLModule.forRoot<MercuriusDriverConfig>({
        driver: MercuriusDriver,
        autoSchemaFile: true,
        subscription: true,
        allowBatchedQueries: true,
      });
}

describe.each(DRIVERS)('docs/rate-limit.md on GraphQL (%s, %s)', (platform, _driver) => {
  const boot = async () => {
    const app = await createToolkitApp({
      platform,
      http: true,
      keyPrefix: prefix(),
      rateLimit: { trustProxy: true },
      imports: [graphqlModule(platform)],
      providers: [ClaimsResolver, GuardedResolver, { provide: APP_GUARD, useClass: RateLimitGuard }],
    });
    const http = app.app.getHttpServer() as Server;
    const { port } = http.address() as { port: number };
    const client = `198.51.100.${1 + (randomBytes(1)[0] % 250)}`;
    const post = (body: object) => request(http).post('/graphql').set('x-forwarded-for', client).send(body);
    const peek = async (scope: string, limit: number) =>
      (await app.get(RateLimitService).peekAll([{ key: client, scope, policy: { limit, ttl: 60_000 } }])).results[0]
        .remaining;
    return { app, port, post, peek, client };
  };

  // "Every resolution of a limited field is charged, so a query naming it under several aliases is charged once per
  // alias": 3 aliases of a 5-per-minute field charge 3; in the next such query 2 run and are charged, 1 is refused (the
  // field is non-null, so by GraphQL's rules its error makes the whole `data` null although 2 aliases ran).
  it('aliases: each alias is charged once; the aliases past the limit are refused, the others run', async () => {
    const { post, peek } = await boot();
    runs.limited = 0;
    const first = (await post({ query: '{ a: limited b: limited c: limited }' })).body as GraphqlReply;
    expect(first).toEqual({ data: { a: 'ok', b: 'ok', c: 'ok' } });
    expect(await peek('ClaimsResolver.limited:x', 5)).toBe(2);
    const second = (await post({ query: '{ a: limited b: limited c: limited }' })).body as GraphqlReply;
    expect(second.data ?? null).toBeNull();
    expect(second.errors?.map((e) => e.message)).toEqual(['Too Many Requests']);
    expect(runs.limited).toBe(5);
    expect(await peek('ClaimsResolver.limited:x', 5)).toBe(0);
  });

  // "(a global guard and a resolver's own guard still charge a counter once per resolution)"
  it('APP_GUARD and @UseGuards(RateLimitGuard) on the resolver: one charge per resolution', async () => {
    const { post } = await boot();
    const answers = [];
    for (let i = 0; i < 3; i++) {
      const reply = (await post({ query: '{ guarded }' })).body as GraphqlReply;
      answers.push(reply.data?.guarded ?? reply.errors?.[0].message);
    }
    expect(answers).toEqual(['guarded', 'guarded', 'Too Many Requests']);
  });

  // "headers go to its res, Mercurius' reply or Express's req.res. A refused query gets a GraphQL error Too Many
  // Requests and Retry-After": the response's status stays 200 (a GraphQL error). A query of several limited fields, or a
  // batch of operations, is one response: each field's guard writes its own decision's headers to it, so it carries
  // those of one of them (the last written), and Retry-After once any field was refused.
  it('several limited fields in one query: one set of headers (one field decision), Retry-After once one is refused', async () => {
    const { post } = await boot();
    const admitted = await post({ query: '{ limited other }' });
    expect(admitted.status).toBe(200);
    expect(admitted.body).toEqual({ data: { limited: 'ok', other: 'other' } });
    expect(admitted.headers.ratelimit).toMatch(/^"(x";r=4|y";r=0);t=60$/);
    expect(admitted.headers['retry-after']).toBeUndefined();
    const refused = await post({ query: '{ limited other }' });
    expect(refused.status).toBe(200);
    expect((refused.body as GraphqlReply).data).toBeNull();
    expect((refused.body as GraphqlReply).errors?.map((e) => e.message)).toEqual(['Too Many Requests']);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(55);
  });

  // A batch (Apollo allowBatchedHttpRequests, Mercurius allowBatchedQueries) is charged per field resolution, as the
  // same operations sent one by one would be.
  it('a batch of operations in one HTTP request: each operation charged, the ones past the limit refused', async () => {
    const { post } = await boot();
    const batch = await post([{ query: '{ other }' }, { query: '{ other }' }, { query: '{ limited }' }]);
    expect(batch.status).toBe(200);
    const replies = batch.body as GraphqlReply[];
    expect(replies.map((r) => r.data?.other ?? r.data?.limited ?? r.errors?.[0].message)).toEqual([
      'other',
      'Too Many Requests',
      'ok',
    ]);
    expect(Number(batch.headers['retry-after'])).toBeGreaterThanOrEqual(55);
  });

  // Subscriptions: a @Subscription resolver is limited by the same guard when the subscription starts (one charge per
  // subscription, none per event it delivers), tracked by the client address of the WebSocket upgrade (Apollo over
  // graphql-ws: the upgrade request is graphql-ws's extra.request; until 2026-12-06 every subscriber was tracked as
  // "unknown", one counter for all). A refused subscription gets a GraphQL error Too Many Requests.
  it('subscriptions: one charge when one starts, per client address; the refused one gets Too Many Requests', async () => {
    const { port, peek } = await boot();
    runs.ticks = 0;
    /** The events of a subscription from `address` (as X-Forwarded-For, trusted), or its error's messages. */
    const subscribe = async (address: string): Promise<unknown[]> => {
      class FromClient extends WebSocket {
        constructor(url: string, protocols?: string | string[]) {
          super(url, protocols, { headers: { 'x-forwarded-for': address } });
        }
      }
      const client = createClient({
        url: `ws://127.0.0.1:${port}/graphql`,
        webSocketImpl: FromClient,
        retryAttempts: 0,
      });
      const got: unknown[] = [];
      await new Promise<void>((resolve) => {
        client.subscribe(
          { query: 'subscription { ticks }' },
          {
            next: (v) => void got.push(v.data?.ticks ?? v.errors?.map((e) => e.message)),
            // Mercurius sends a refused subscription as a graphql-ws error message (Apollo: a result with errors)
            error: (e) => {
              got.push(Array.isArray(e) ? e.map((x: { message: string }) => x.message) : String(e));
              resolve();
            },
            complete: resolve,
          },
        );
      });
      await client.dispose();
      return got;
    };
    expect(await subscribe('203.0.113.1')).toEqual(['tick 1', 'tick 2', 'tick 3']);
    expect(await subscribe('203.0.113.2')).toEqual(['tick 1', 'tick 2', 'tick 3']);
    expect(await subscribe('203.0.113.1')).toEqual([['Too Many Requests']]);
    expect(runs.ticks).toBe(2);
    expect(await peek('ClaimsResolver.ticks:sub', 1)).toBe(1); // this test's HTTP client: never subscribed
  });
});
