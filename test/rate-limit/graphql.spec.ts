import 'reflect-metadata';
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import type { ExecutionContext } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { APP_GUARD } from '@nestjs/core';
import { GraphQLModule, Query, Resolver } from '@nestjs/graphql';
import { MercuriusDriver, type MercuriusDriverConfig } from '@nestjs/mercurius';
import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { RateLimitGuard, RateLimitService, SkipThrottle, Throttle, UnsupportedContextError } from '../../lib/index.js';
import { type ThrottledRequest, type ThrottledResponse } from '../../lib/advanced.js';
import { RATE_LIMIT_OPTIONS as RATE_LIMIT_OPTIONS_TOKEN } from '../../lib/rate-limit/rate-limit.options.js';
import type { GraphqlReply } from '../support/rate-limit-http.js';
import { closeToolkitApps, createToolkitApp, type Platform } from '../support/toolkit-app.js';

@Resolver()
class GreetingResolver {
  @Query(() => String)
  @Throttle({ limit: 2, ttl: 60_000 })
  hello(): string {
    return 'world';
  }

  @Query(() => String)
  @SkipThrottle()
  open(): string {
    return 'open';
  }
}

afterEach(() => closeToolkitApps());

function graphqlModule(platform: Platform) {
  return platform === 'express'
    ? GraphQLModule.forRoot<ApolloDriverConfig>({ driver: ApolloDriver, autoSchemaFile: true })
    : GraphQLModule.forRoot<MercuriusDriverConfig>({ driver: MercuriusDriver, autoSchemaFile: true });
}

describe.each([
  ['express', 'Apollo'],
  ['fastify', 'Mercurius'],
] as const)('RateLimitGuard as APP_GUARD on GraphQL resolvers (%s, %s)', (platform, _driver) => {
  it('limits a resolver: the third query in the window is refused with 429, headers set; @SkipThrottle stays open', async () => {
    const app = await createToolkitApp({
      platform,
      http: true,
      keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
      imports: [graphqlModule(platform)],
      providers: [GreetingResolver, { provide: APP_GUARD, useClass: RateLimitGuard }],
    });
    const server = app.app.getHttpServer();
    const ask = (query: string) => request(server).post('/graphql').send({ query });
    const replies = [];
    for (let i = 0; i < 3; i++) replies.push(await ask('{ hello }'));
    expect(replies.map((r) => (r.body as GraphqlReply).data?.hello ?? null)).toEqual(['world', 'world', null]);
    expect(replies[0].headers.ratelimit).toBe('"default";r=1;t=60');
    const refused = replies[2].body as GraphqlReply;
    expect(refused.errors).toHaveLength(1);
    expect(refused.errors?.[0].message).toBe('Too Many Requests');
    expect(Number(replies[2].headers['retry-after'])).toBeGreaterThanOrEqual(55);
    // counted in Redis: one refusal, two admissions (plus nothing for the skipped resolver)
    for (let i = 0; i < 3; i++) expect(((await ask('{ open }')).body as GraphqlReply).data?.open).toBe('open');
    expect(app.get(RateLimitService).stats()).toMatchObject({ allowed: 2, denied: 1 });
  });
});

describe('RateLimitGuard on an execution context it cannot read', () => {
  const context = (type: string): ExecutionContext =>
    ({
      getType: () => type,
      getClass: () => GreetingResolver,
      getHandler: () => GreetingResolver.prototype.hello,
      getArgByIndex: () => undefined,
      switchToHttp: () => ({ getRequest: () => ({}), getResponse: () => ({}) }),
      switchToWs: () => ({ getClient: () => ({}) }),
    }) as unknown as ExecutionContext;

  it('refuses an rpc (or any unknown) context with UnsupportedContextError instead of allowing it', async () => {
    const app = await createToolkitApp({ keyPrefix: `rtk-${randomUUID().slice(0, 8)}:` });
    const guard = new RateLimitGuard(app.get(RateLimitService), new Reflector(), app.get(RATE_LIMIT_OPTIONS_TOKEN));
    await expect(guard.canActivate(context('rpc'))).rejects.toBeInstanceOf(UnsupportedContextError);
    await expect(guard.canActivate(context('kafka-ish'))).rejects.toThrow(
      /cannot read a "kafka-ish" execution context/,
    );
    // a graphql context without a request in it is refused too, not allowed
    await expect(guard.canActivate(context('graphql'))).rejects.toBeInstanceOf(UnsupportedContextError);
    expect(app.get(RateLimitService).stats()).toMatchObject({ allowed: 0, denied: 0 });
  });

  it('a getRequestResponse override makes an unknown context type limited (the documented recipe)', async () => {
    const req: ThrottledRequest = { socket: { remoteAddress: '192.0.2.7' }, headers: {} };
    class RpcGuard extends RateLimitGuard {
      protected override getRequestResponse(): { req: ThrottledRequest; res: ThrottledResponse | undefined } {
        return { req, res: undefined };
      }
    }
    const app = await createToolkitApp({
      keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
      rateLimit: { defaults: { limit: 2, ttl: 60_000 } },
    });
    const guard = new RpcGuard(app.get(RateLimitService), new Reflector(), app.get(RATE_LIMIT_OPTIONS_TOKEN));
    const handler = function onMessage(): void {};
    const ctx = { ...context('rpc'), getHandler: () => handler, getClass: () => Object };
    const outcomes: string[] = [];
    for (let i = 0; i < 3; i++) {
      outcomes.push(
        await guard.canActivate(ctx as unknown as ExecutionContext).then(
          () => 'allowed',
          (e: Error) => e.constructor.name,
        ),
      );
    }
    expect(outcomes).toEqual(['allowed', 'allowed', 'RateLimitHttpException']);
  });
});
