/**
 * skipSuccessfulRequests / skipFailedRequests are decided by an HTTP response's status: on a GraphQL resolver (a failed
 * field is an error in a 200 response) or a Socket.IO message handler (no status) they cannot work. Until 2026-12-06
 * such an app started, and the guard refused each request that reached the handler (an error per query or message).
 * Now the start is refused (InvalidOptionsError naming the handler, the policy and the option) when a refund option
 * applies to a resolver or gateway handler by the rules the guard applies per request (handler's @Throttle, else the
 * class's, less what @SkipThrottle skips); apps where it applies to HTTP routes only start as before.
 */
import 'reflect-metadata';
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import { Controller, Get, UseGuards } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { GraphQLModule, Query, ResolveField, Resolver } from '@nestjs/graphql';
import { RESOLVER_PROPERTY_METADATA, RESOLVER_TYPE_METADATA } from '@nestjs/graphql/dist/graphql.constants.js';
import { MercuriusDriver, type MercuriusDriverConfig } from '@nestjs/mercurius';
import { SubscribeMessage, WebSocketGateway } from '@nestjs/websockets';
import { MESSAGE_MAPPING_METADATA } from '@nestjs/websockets/constants.js';
import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { InvalidOptionsError, RateLimitGuard, SkipThrottle, Throttle } from '../../lib/index.js';
import * as guardContexts from '../../lib/rate-limit/rate-limit.guard-contexts.js';
import { errorOf } from '../support/errors.js';
import type { GraphqlReply } from '../support/rate-limit-http.js';
import { closeToolkitApps, createToolkitApp, type ToolkitAppOptions } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

afterEach(() => closeToolkitApps());

const prefix = (): string => `rtk-rfs-${randomUUID().slice(0, 8)}:`;

const apollo = () => GraphQLModule.forRoot<ApolloDriverConfig>({ driver: ApolloDriver, autoSchemaFile: true });
const mercurius = () => GraphQLModule.forRoot<MercuriusDriverConfig>({ driver: MercuriusDriver, autoSchemaFile: true });

/** The error the app's start gives, or undefined when it started. */
const startError = (options: ToolkitAppOptions): Promise<unknown> =>
  errorOf(() => createToolkitApp({ keyPrefix: prefix(), ...options }));

// --- apps that must not start ----------------------------------------------------------------------------------------

@Resolver()
class LoginResolver {
  @Query(() => String)
  @Throttle({ limit: 5, ttl: 60_000, skipSuccessfulRequests: true })
  login(): string {
    return 'welcome';
  }
}

@Resolver()
@UseGuards(RateLimitGuard)
@Throttle({ name: 'uploads', limit: 5, ttl: 60_000, skipFailedRequests: true })
class UploadResolver {
  @Query(() => String)
  upload(): string {
    return 'stored';
  }
}

@Resolver()
class LoginResolverWithoutThrottle {
  @Query(() => String)
  hello(): string {
    return 'world';
  }
}

@WebSocketGateway({ namespace: '/rfs' })
@UseGuards(RateLimitGuard)
class RefundGateway {
  @SubscribeMessage('ping')
  @Throttle({ limit: 2, ttl: 60_000 })
  ping(): string {
    return 'pong';
  }

  @SubscribeMessage('refunded')
  @Throttle({ limit: 2, ttl: 60_000, skipSuccessfulRequests: true })
  refunded(): string {
    return 'refunded';
  }
}

describe.each([
  ['Apollo', apollo],
  ['Mercurius', mercurius],
] as const)('a refund option on a GraphQL resolver fails the start (%s)', (_driver, graphql) => {
  it('on the handler, the guard global (APP_GUARD): InvalidOptionsError naming handler, policy and option', async () => {
    const err = await startError({
      imports: [graphql()],
      providers: [LoginResolver, { provide: APP_GUARD, useClass: RateLimitGuard }],
    });
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toMatch(
      /LoginResolver\.login: rate-limit policy "default"\.skipSuccessfulRequests is decided by the HTTP response's status, and a GraphQL field fails with an error in a 200 response: it works on HTTP routes only/,
    );
  });

  it("on the resolver's class, the guard on the class: each handler it applies to is named", async () => {
    const err = await startError({ imports: [graphql()], providers: [UploadResolver] });
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toMatch(/UploadResolver\.upload: rate-limit policy "uploads"\.skipFailedRequests/);
  });
});

describe('a refund option on a Socket.IO message handler fails the start', () => {
  it('InvalidOptionsError naming the handler; the handler beside it without the option is not named', async () => {
    const err = await startError({ http: true, providers: [RefundGateway] });
    expect(err).toBeInstanceOf(InvalidOptionsError);
    const message = (err as Error).message;
    expect(message).toMatch(
      /RefundGateway\.refunded: rate-limit policy "default"\.skipSuccessfulRequests is decided by the HTTP response's status, and a "ws" call \(a WebSocket message\) has no response status/,
    );
    expect(message).not.toMatch(/RefundGateway\.ping/);
  });
});

describe('a refund option in the module options, the guard global, the app with a resolver', () => {
  // rateLimit.defaults (what a global guard applies where no @Throttle is) takes no refund option: it is refused as an
  // unknown key when the options are resolved, before the app is built (so before any resolver is looked at)
  it('fails the start with InvalidOptionsError naming the option', async () => {
    const err = await startError({
      rateLimit: { defaults: { limit: 5, ttl: 60_000, skipSuccessfulRequests: true } as never },
      imports: [apollo()],
      providers: [LoginResolverWithoutThrottle, { provide: APP_GUARD, useClass: RateLimitGuard }],
    });
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toMatch(/rateLimit\.defaults\.skipSuccessfulRequests is not a known option/);
  });
});

// --- apps that still start -------------------------------------------------------------------------------------------

@Controller()
@Throttle({ limit: 1, ttl: 60_000, skipSuccessfulRequests: true })
class LoginController {
  @Get('login')
  login(): string {
    return 'welcome';
  }
}

@Resolver()
class LimitedResolver {
  @Query(() => String)
  @Throttle({ limit: 1, ttl: 60_000 })
  limited(): string {
    return 'ok';
  }
}

/**
 * A refund policy on the class that applies to no handler, by the guard's rules: a handler's own @Throttle replaces
 * it, @SkipThrottle() turns the guard off, @SkipThrottle({ refunded: true }) skips it by name; a method that is no
 * resolver is no handler.
 */
@Resolver()
@Throttle({ name: 'refunded', limit: 5, ttl: 60_000, skipSuccessfulRequests: true })
class CoveredResolver {
  @Query(() => String)
  @Throttle({ name: 'own', limit: 1, ttl: 60_000 })
  own(): string {
    return 'own';
  }

  @Query(() => String)
  @SkipThrottle()
  skipped(): string {
    return 'skipped';
  }

  @Query(() => String)
  @SkipThrottle({ refunded: true })
  skippedByName(): string {
    return 'skippedByName';
  }

  helper(): string {
    return 'not a resolver';
  }
}

describe('apps whose refund options apply to HTTP routes only still start', () => {
  it('an HTTP-only app with the option (global guard): starts, and a success is refunded', async () => {
    const app = await createToolkitApp({
      keyPrefix: prefix(),
      http: true,
      controllers: [LoginController],
      providers: [{ provide: APP_GUARD, useClass: RateLimitGuard }],
    });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      statuses.push((await request(app.app.getHttpServer()).get('/login')).status);
      await sleep(50); // a refund is sent when the response finishes
    }
    expect(statuses).toEqual([200, 200, 200]); // a limit of 1: each success given back
  });

  it('a resolver without the option beside an HTTP route with it (global guard): starts and limits', async () => {
    const app = await createToolkitApp({
      keyPrefix: prefix(),
      http: true,
      imports: [apollo()],
      controllers: [LoginController],
      providers: [LimitedResolver, { provide: APP_GUARD, useClass: RateLimitGuard }],
    });
    const ask = async () =>
      ((await request(app.app.getHttpServer()).post('/graphql').send({ query: '{ limited }' })).body as GraphqlReply)
        .data?.limited ?? null;
    expect([await ask(), await ask()]).toEqual(['ok', null]);
  });

  it('a refund policy on a resolver class that no handler applies (replaced, skipped): starts', async () => {
    const app = await createToolkitApp({
      keyPrefix: prefix(),
      http: true,
      imports: [apollo()],
      providers: [CoveredResolver, { provide: APP_GUARD, useClass: RateLimitGuard }],
    });
    const ask = async (field: string) =>
      (
        (
          await request(app.app.getHttpServer())
            .post('/graphql')
            .send({ query: `{ ${field} }` })
        ).body as GraphqlReply
      ).data?.[field] ?? null;
    expect([await ask('own'), await ask('own')]).toEqual(['own', null]); // its own limit of 1
    for (const field of ['skipped', 'skippedByName'])
      expect([await ask(field), await ask(field)]).toEqual([field, field]);
  });
});

// --- where the scan looks --------------------------------------------------------------------------------------------

describe('the handler metadata the start-up scan reads without importing @nestjs/graphql or @nestjs/websockets', () => {
  it("is the packages' own", () => {
    expect((guardContexts as Record<string, unknown>).HANDLER_METADATA).toEqual({
      graphql: [RESOLVER_TYPE_METADATA, RESOLVER_PROPERTY_METADATA, 'graphql:resolve_reference'],
      ws: [MESSAGE_MAPPING_METADATA],
    });
  });

  it('a @ResolveField with the option is refused too (a field resolver runs guards with fieldResolverEnhancers)', async () => {
    @Resolver(() => String)
    class FieldResolver {
      @ResolveField(() => String)
      @Throttle({ limit: 5, ttl: 60_000, skipFailedRequests: true })
      length(): string {
        return '1';
      }
    }
    const err = await startError({ providers: [FieldResolver] });
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toMatch(/FieldResolver\.length: rate-limit policy "default"\.skipFailedRequests/);
  });
});
