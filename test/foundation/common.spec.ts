import 'reflect-metadata';
import { Controller, Get, Injectable, type Logger, Module } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { Test } from '@nestjs/testing';
import request from 'supertest';
import { InvalidKeyError, SerializationError } from '../../lib/index.js';
import { JsonSerializer, KeyBuilder } from '../../lib/advanced.js';
import {
  createInterceptedMethodDecorator,
  METHOD_INTERCEPTORS,
  MethodInterceptionExplorer,
  type InterceptedMethod,
  type MethodInterceptor,
  type NextCall,
} from '../../lib/common/method-interception.js';
import { makeRoom } from '../../lib/common/bounded-map.js';
import { ThrottledWarning } from '../../lib/common/throttled-logger.js';
import { durationProblem } from '../../lib/common/option-checks.js';
import { clearLongTimeout, MAX_TIMER_MS, setLongTimeout } from '../../lib/common/timeout.js';
import { jest } from '@jest/globals';

describe('KeyBuilder', () => {
  const keys = new KeyBuilder('rtk:');

  it('prefixes, and escapes braces so callers cannot make or break hash tags', () => {
    expect(keys.key('cache', 'products')).toBe('rtk:cache:products');
    expect(keys.key('cache', 'products:1')).toBe('rtk:cache:products%3A1');
    expect(keys.key('cache', 'a{b}c%')).toBe('rtk:cache:a%7Bb%7Dc%25');
    expect(keys.key('rl', 'a', 'b')).toBe('rtk:rl:a:b');
    expect(keys.key('rl', 'a:b')).not.toBe(keys.key('rl', 'a', 'b'));
    expect(keys.tagged('lock', 'orders:{7}', ':fence')).toBe('rtk:lock:{orders%3A%7B7%7D}:fence');
    // Injective: inputs that would collide if only braces were escaped stay apart.
    expect(keys.key('c', '%7B')).not.toBe(keys.key('c', '{'));
  });

  it.each([
    ['', /must not be empty/],
    ['x'.repeat(1025), /longer than 1024 bytes/],
    ['é'.repeat(513), /longer than 1024 bytes/],
    ['a\nb', /control characters/],
    ['a\u0000b', /control characters/],
  ])('rejects %j with InvalidKeyError', (bad, message) => {
    expect(() => keys.key('cache', bad)).toThrow(InvalidKeyError);
    expect(() => keys.key('cache', bad)).toThrow(message);
  });

  it('rejects non-strings', () => {
    expect(() => keys.key('cache', 42 as unknown as string)).toThrow(/must be a string, got number/);
  });

  it('scopes user patterns under the prefix, escaping glob characters of the prefix only', () => {
    const odd = new KeyBuilder('app*[1]:');
    expect(odd.pattern('cache', 'products:*')).toBe('app\\*\\[1\\]:cache:products%3A*');
    expect(keys.pattern('cache', '{x}*')).toBe('rtk:cache:%7Bx%7D*');
  });
});

describe('durationProblem', () => {
  it('shows the number the caller gave, Infinity and NaN included (JSON writes both as null)', () => {
    expect(durationProblem(Number.POSITIVE_INFINITY)).toBe(
      'must be at most 3153600000000 ms (100 years), got Infinity',
    );
    expect(durationProblem(Number.NaN)).toBe('must be a positive number of milliseconds, got NaN');
    expect(durationProblem(-1, true)).toBe('must be a non-negative number of milliseconds, got -1');
    expect(durationProblem(10n)).toBe('must be a positive number of milliseconds, got 10n');
    expect(durationProblem('5')).toBe('must be a positive number of milliseconds, got "5"');
  });
});

describe('setLongTimeout', () => {
  afterEach(() => jest.useRealTimers());

  it('fires a delay past what setTimeout keeps (2^31 - 1 ms) once, at its time, and clearLongTimeout stops it', () => {
    jest.useFakeTimers();
    const day = 86_400_000;
    let fired = 0;
    setLongTimeout(() => fired++, 30 * day); // setTimeout alone would fire it after 1 ms
    jest.advanceTimersByTime(1);
    expect(fired).toBe(0);
    jest.advanceTimersByTime(MAX_TIMER_MS);
    expect(fired).toBe(0);
    jest.advanceTimersByTime(30 * day - MAX_TIMER_MS - 2);
    expect(fired).toBe(0);
    jest.advanceTimersByTime(1);
    expect(fired).toBe(1);
    jest.advanceTimersByTime(60 * day);
    expect(fired).toBe(1);
    const stopped = setLongTimeout(() => fired++, 60 * day);
    jest.advanceTimersByTime(MAX_TIMER_MS + 5); // past the first step: the second one is cleared
    clearLongTimeout(stopped);
    jest.advanceTimersByTime(60 * day);
    expect(fired).toBe(1);
  });
});

describe('makeRoom (bounded maps)', () => {
  it('drops the entries inserted longest ago until one more fits, and nothing while there is room', () => {
    const map = new Map([
      ['a', 1],
      ['b', 2],
      ['c', 3],
    ]);
    makeRoom(map, 4);
    expect([...map.keys()]).toEqual(['a', 'b', 'c']);
    map.set('a', 10); // an update keeps its place
    makeRoom(map, 3);
    expect([...map.keys()]).toEqual(['b', 'c']);
    makeRoom(map, 1);
    expect(map.size).toBe(0);
    makeRoom(map, 0); // nothing left to drop: returns
    expect(map.size).toBe(0);
  });
});

describe('JsonSerializer', () => {
  const serializer = new JsonSerializer();

  it('round-trips Dates, nested and in arrays, and null', () => {
    const value = { at: new Date('2026-01-02T03:04:05.678Z'), list: [new Date(0)], n: null, s: 'x', k: 1.5 };
    const back = serializer.deserialize<typeof value>(serializer.serialize(value));
    expect(back.at).toBeInstanceOf(Date);
    expect(back.at.getTime()).toBe(value.at.getTime());
    expect(back.list[0].getTime()).toBe(0);
    expect(back).toEqual(value);
    expect(serializer.deserialize(serializer.serialize(null))).toBeNull();
  });

  it('refuses what JSON would lose or cannot encode', () => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    expect(() => serializer.serialize(10n)).toThrow(SerializationError);
    expect(() => serializer.serialize(circular)).toThrow(SerializationError);
    expect(() => serializer.serialize(undefined)).toThrow(/use null/);
    expect(() => serializer.serialize(() => 1)).toThrow(SerializationError);
    expect(() => serializer.deserialize('{oops')).toThrow(SerializationError);
  });
});

describe('method interception (decorators + explorer)', () => {
  const TRACE = 'test:trace';
  const Trace = (label: string) => createInterceptedMethodDecorator(TRACE, '@Trace', label);

  /** Records the calls it sees, tagged with the app it belongs to. */
  class TraceInterceptor implements MethodInterceptor<string> {
    readonly metadataKey = TRACE;
    readonly decoratorName = '@Trace';
    readonly order = 0;
    readonly seen: string[] = [];
    constructor(readonly appName: string) {}
    prepare(target: InterceptedMethod, label: string) {
      return async (args: unknown[], next: NextCall) => {
        this.seen.push(`${this.appName}:${target.className}.${target.methodName}:${label}:${JSON.stringify(args)}`);
        return { wrapped: await next() };
      };
    }
  }

  @Injectable()
  class Greeter {
    private readonly greeting = 'hello';
    @Trace('svc')
    greet(name: string) {
      return `${this.greeting} ${name}`;
    }
    plain() {
      return 'plain';
    }
  }

  @Controller('greet')
  class GreetController {
    @Get()
    @Trace('ctl')
    hello() {
      return 'hi';
    }

    @Trace('ctl2')
    @Get('reversed')
    reversed() {
      return 'rev';
    }
  }

  async function boot(name: string) {
    const interceptor = new TraceInterceptor(name);
    @Module({
      imports: [DiscoveryModule],
      controllers: [GreetController],
      providers: [Greeter, MethodInterceptionExplorer, { provide: METHOD_INTERCEPTORS, useValue: [interceptor] }],
    })
    class AppModule {}
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    return { app, interceptor };
  }

  it('wraps provider and controller methods per app instance, keeping route metadata', async () => {
    const a = await boot('A');
    const b = await boot('B');
    try {
      expect(await a.app.get(Greeter).greet('ann')).toEqual({ wrapped: 'hello ann' });
      expect(await b.app.get(Greeter).greet('bob')).toEqual({ wrapped: 'hello bob' });
      expect(a.app.get(Greeter).plain()).toBe('plain');
      const res = await request(a.app.getHttpServer()).get('/greet').expect(200);
      expect(res.body).toEqual({ wrapped: 'hi' });
      expect((await request(a.app.getHttpServer()).get('/greet/reversed').expect(200)).body).toEqual({
        wrapped: 'rev',
      });
      expect(a.interceptor.seen).toEqual([
        'A:Greeter.greet:svc:["ann"]',
        'A:GreetController.hello:ctl:[]',
        'A:GreetController.reversed:ctl2:[]',
      ]);
      expect(b.interceptor.seen).toEqual(['B:Greeter.greet:svc:["bob"]']);
      // Without the explorer (no module), the original method runs untouched.
      expect(new Greeter().greet('raw')).toBe('hello raw');
    } finally {
      await a.app.close();
      await b.app.close();
    }
  });
});

describe('ThrottledWarning (pure)', () => {
  function recorder() {
    const lines: string[] = [];
    const logger = { warn: (m: unknown) => void lines.push(String(m)) } as unknown as Logger;
    return { lines, logger };
  }

  it('counts the suppressed warnings of an interval in one line at its end', async () => {
    const { lines, logger } = recorder();
    const warning = new ThrottledWarning(logger, 50, () => 'failed calls');
    for (let i = 0; i < 4; i++) warning.warn(`boom ${i}`);
    expect(lines).toEqual(['boom 0']);
    await new Promise((r) => setTimeout(r, 120));
    expect(lines).toEqual(['boom 0', 'failed calls: 3 more since the last warning, not logged one by one']);
  });

  // rateLimit.warnIntervalMs (and every owner's interval) may be up to 100 years; the count's timer got the whole
  // interval, and Node fires a delay past 2^31 - 1 ms after 1 ms: the count line came at once, not at the interval's end
  it('an interval past the longest timer delay: the count is not logged at once', async () => {
    const { lines, logger } = recorder();
    const warning = new ThrottledWarning(logger, 3e9, () => 'failed calls');
    warning.warn('boom');
    warning.warn('boom again');
    await new Promise((r) => setTimeout(r, 60));
    expect(lines).toEqual(['boom']);
    warning.close();
    expect(lines).toEqual(['boom', 'failed calls: 1 more since the last warning, not logged one by one']);
  });

  // A count's timer left to run after its app closed logged through whichever logger Nest had by then (the next
  // test's app: test/security/acl.spec.ts 'a timeout on master 1 during the check' saw a stray rate-limit count).
  it('close(): the pending count is logged at once, and nothing is logged after', async () => {
    const { lines, logger } = recorder();
    const warning = new ThrottledWarning(logger, 50, () => 'failed calls');
    warning.warn('boom');
    warning.warn('boom again');
    warning.close();
    expect(lines).toEqual(['boom', 'failed calls: 1 more since the last warning, not logged one by one']);
    warning.warn('during shutdown');
    await new Promise((r) => setTimeout(r, 120));
    expect(lines).toHaveLength(2);
  });
});
