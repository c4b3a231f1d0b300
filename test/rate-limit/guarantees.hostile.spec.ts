/**
 * An outsider's review of the behavioural prose of docs/rate-limit.md (not the guard's hooks, not the option tables):
 * one case per promise that no other spec proved. Each case quotes the claim it holds the code to.
 */
import 'reflect-metadata';
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import { Controller, Get, Inject, Injectable, type Type, UnauthorizedException, UseGuards } from '@nestjs/common';
import { APP_GUARD, Reflector } from '@nestjs/core';
import { Args, GraphQLModule, Query, Resolver } from '@nestjs/graphql';
import { MercuriusDriver, type MercuriusDriverConfig } from '@nestjs/mercurius';
import { SubscribeMessage, WebSocketGateway } from '@nestjs/websockets';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { io, type Socket } from 'socket.io-client';
import request from 'supertest';
import { RateLimitGuard, RateLimitService, Throttle } from '../../lib/index.js';
import { RATE_LIMIT_OPTIONS, type ResolvedRateLimitOptions as ResolvedOptions } from '../../lib/advanced.js';
import type { GraphqlReply } from '../support/rate-limit-http.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

const prefix = (): string => `rtk-rlg-${randomUUID().slice(0, 8)}:`;

afterEach(() => closeToolkitApps());

// --- skipSuccessfulRequests on a GraphQL resolver ------------------------------------------------------------------

let loginRuns = 0;

/**
 * A guard whose defaults have skipSuccessfulRequests: options it builds itself, which the start-up scan cannot see
 * (it reads @Throttle metadata; rateLimit.defaults refuses refund options). Its per-request check is the backstop.
 */
@Injectable()
class RefundingGuard extends RateLimitGuard {
  constructor(rateLimit: RateLimitService, reflector: Reflector, @Inject(RATE_LIMIT_OPTIONS) options: ResolvedOptions) {
    const defaults = { ...options.defaults, limit: 2, ttl: 60_000, skipSuccessfulRequests: true };
    super(rateLimit, reflector, { ...options, defaults });
  }
}

@Resolver()
class LoginResolver {
  @Query(() => String)
  @UseGuards(RefundingGuard)
  login(@Args('password') password: string): string {
    loginRuns++;
    if (password !== 'right') throw new UnauthorizedException();
    return 'welcome';
  }
}

describe.each([
  ['express', 'Apollo'],
  ['fastify', 'Mercurius'],
] as const)('skipSuccessfulRequests on a GraphQL resolver (%s, %s)', (platform, _driver) => {
  // "With skipSuccessfulRequests only failures count: the login brute-force setup". A GraphQL field's failure is an
  // error in a 200 response: the refund, decided by the HTTP status, gave back every failed login (unlimited guesses).
  // A @Throttle with the option on a resolver fails the start (refund-options-start.spec.ts); a guard's own defaults
  // with it are refused per request.
  it('a failed login is never refunded as a success: the resolver runs at most its limit, the option named', async () => {
    const app = await createToolkitApp({
      platform,
      http: true,
      keyPrefix: prefix(),
      imports: [
        platform === 'express'
          ? GraphQLModule.forRoot<ApolloDriverConfig>({ driver: ApolloDriver, autoSchemaFile: true })
          : GraphQLModule.forRoot<MercuriusDriverConfig>({ driver: MercuriusDriver, autoSchemaFile: true }),
      ],
      providers: [LoginResolver, RefundingGuard],
    });
    const { port } = (app.app.getHttpServer() as Server).address() as AddressInfo;
    const ask = async (password: string): Promise<GraphqlReply> => {
      const res = await fetch(`http://127.0.0.1:${port}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: `{ login(password: ${JSON.stringify(password)}) }` }),
      });
      const body = (await res.json()) as GraphqlReply;
      await sleep(50); // a refund is sent when the response finishes
      return body;
    };
    loginRuns = 0;
    const replies: GraphqlReply[] = [];
    for (let i = 0; i < 5; i++) replies.push(await ask('wrong'));
    expect(loginRuns).toBe(0); // refused before it runs
    for (const r of replies) expect(r.errors?.length).toBe(1);
    // refused loudly, naming what cannot work there (a GraphQL field's outcome is not its response's status)
    expect(replies[0].errors?.[0].message).toMatch(/skipSuccessfulRequests.*GraphQL/);
    expect(app.get(RateLimitService).stats()).toMatchObject({ allowed: 0 });
  });
});

// --- a generateKey that gives undefined, two policies ---------------------------------------------------------------

@Injectable()
class UnscopedGuard extends RateLimitGuard {
  protected override generateKey(): string {
    return undefined as unknown as string; // documented: "undefined: the tracker's unscoped counter"
  }
}

@Controller('unscoped')
class UnscopedController {
  @Get()
  @UseGuards(UnscopedGuard)
  @Throttle({ name: 'minute', limit: 5, ttl: 60_000 }, { name: 'half', limit: 2, ttl: 30_000 })
  route(): string {
    return 'ok';
  }
}

describe.each(PLATFORMS)('two policies on the unscoped counters of a tracker (%s)', (platform) => {
  // "generateKey ... `undefined`: the tracker's unscoped counter" and "@Throttle(a, b) // both must hold". The unscoped
  // counter of a policy is per limit/ttl in the service, but the guard's once-per-request bookkeeping named both ''
  // and dropped the second policy as already charged: `half` (2 per 30 s) never applied.
  it('both policies hold: the third request is refused by the tighter one', async () => {
    const app = await createToolkitApp({
      platform,
      http: true,
      keyPrefix: prefix(),
      controllers: [UnscopedController],
      providers: [UnscopedGuard],
    });
    const http = app.app.getHttpServer() as Server;
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await request(http).get('/unscoped')).status);
    expect(statuses).toEqual([200, 200, 429, 429]);
  });
});

// --- WebSocket: two guards on one message; refund options ---------------------------------------------------------

@WebSocketGateway({ namespace: '/rlg' })
@UseGuards(RateLimitGuard)
class TwoGuardsGateway {
  @SubscribeMessage('ping')
  @Throttle({ limit: 2, ttl: 60_000 })
  ping(): string {
    return 'pong';
  }
}

/** A message handler under RefundingGuard (its defaults: skipSuccessfulRequests), which the start-up scan cannot see. */
@WebSocketGateway({ namespace: '/rlg-refund' })
class RefundGateway {
  @SubscribeMessage('refunded')
  @UseGuards(RefundingGuard)
  refunded(): string {
    return 'refunded';
  }
}

describe.each(PLATFORMS)('RateLimitGuard on Socket.IO (%s)', (platform) => {
  const sockets: Socket[] = [];
  afterEach(() => {
    for (const s of sockets.splice(0)) s.disconnect();
  });
  /** An app serving `gateway` at `namespace` (TwoGuardsGateway: with RateLimitGuard as APP_GUARD too). */
  const boot = async (gateway: Type<unknown> = TwoGuardsGateway, namespace = '/rlg') => {
    const global = gateway === TwoGuardsGateway ? [{ provide: APP_GUARD, useClass: RateLimitGuard }] : [];
    const app = await createToolkitApp({
      platform,
      http: true,
      keyPrefix: prefix(),
      providers: [gateway, RefundingGuard, ...global],
    });
    const { port } = (app.app.getHttpServer() as Server).address() as AddressInfo;
    const socket = io(`http://127.0.0.1:${port}${namespace}`, { transports: ['websocket'], reconnection: false });
    sockets.push(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    });
    const exceptions: unknown[] = [];
    socket.on('exception', (e: unknown) => exceptions.push(e));
    const emit = async (event: string): Promise<unknown> => {
      try {
        return await socket.timeout(1_000).emitWithAck(event);
      } catch {
        return null; // no answer: refused
      }
    };
    return { app, emit, exceptions };
  };

  // "Each counter is charged once per request even when several guards run for it (APP_GUARD and
  // @UseGuards(RateLimitGuard))": on WebSockets each guard charged the message again (a limit of 2 admitted 1).
  it('APP_GUARD and the gateway guard charge a message once: exactly the limit admitted', async () => {
    const { app, emit } = await boot();
    const answers: unknown[] = [];
    for (let i = 0; i < 3; i++) answers.push(await emit('ping'));
    expect(answers).toEqual(['pong', 'pong', null]);
    expect(app.get(RateLimitService).stats()).toMatchObject({ allowed: 2, denied: 1 });
  });

  // "skipSuccessfulRequests / skipFailedRequests (...; HTTP)": a WebSocket message has no response status; the option
  // did nothing, without a word. Refused, naming it, before anything is charged: at start when @Throttle gives it
  // (refund-options-start.spec.ts), per message when a guard's own defaults do.
  it('skipSuccessfulRequests on a message handler: an error naming it, nothing charged, the handler never run', async () => {
    const { app, emit, exceptions } = await boot(RefundGateway, '/rlg-refund');
    expect(await emit('refunded')).toBeNull();
    expect(exceptions).toHaveLength(1);
    expect(app.get(RateLimitService).stats()).toMatchObject({ allowed: 0, denied: 0 });
  });
});
