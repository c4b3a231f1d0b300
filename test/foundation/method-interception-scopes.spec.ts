/**
 * @Cacheable / @WithLock on the instances Nest makes besides a singleton's (lib/common/method-interception.ts): each
 * consumer's instance of a TRANSIENT provider, the providers of a module loaded after bootstrap with
 * `LazyModuleLoader` (its factory providers too, and a transient instance made for it), and what a request-scoped
 * provider is told. Until 2026-12-05 the explorer attached the cache and the lock to `wrapper.instance` at bootstrap
 * only: every one of these ran the method bare (a load per call, no lock), with no warning, and the request-scoped
 * warning named no remedy. Real Redis (the shared single server).
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Inject, Injectable, Module, Scope } from '@nestjs/common';
import { LazyModuleLoader } from '@nestjs/core';
import { Cacheable, CacheService, InvalidOptionsError, LockService, WithLock } from '../../lib/index.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const prefix = (): string => `rtk-scopes-${randomUUID().slice(0, 8)}:`;

/** Calls of each method body, by a key the test makes unique. */
const loads = new Map<string, number>();
const bump = (key: string): number => {
  const n = (loads.get(key) ?? 0) + 1;
  loads.set(key, n);
  return n;
};
const loadsOf = (key: string): number => loads.get(key) ?? 0;

/** What a @WithLock body sees: the resource of the lock it runs under, or null without one. */
const heldResource = (): string | null => LockService.current()?.lock.resource ?? null;

@Injectable({ scope: Scope.TRANSIENT })
class TransientPrices {
  static run = '';
  @Cacheable({ key: (sku: string) => `price:${TransientPrices.run}:${sku}`, ttl: 60_000 })
  price(sku: string) {
    return { sku, n: bump(`transient:${TransientPrices.run}:${sku}`) };
  }

  @WithLock({ resource: () => `prices:${TransientPrices.run}` })
  reprice(): string | null {
    return heldResource();
  }
}

@Injectable()
class CheckoutA {
  constructor(readonly prices: TransientPrices) {}
}

@Injectable()
class CheckoutB {
  constructor(readonly prices: TransientPrices) {}
}

/** A request-scoped consumer: the transient instance made for it (per request) is not in the static graph. */
@Injectable({ scope: Scope.REQUEST })
class PerRequestCheckout {
  constructor(readonly prices: TransientPrices) {}
}

describe('a TRANSIENT provider: every consumer instance is decorated', () => {
  it('two consumers, two instances: one load for both (a shared cache entry), and each runs under the lock', async () => {
    TransientPrices.run = randomUUID();
    const { warnings, logger } = recordingLogger();
    const { get } = await createToolkitApp({
      keyPrefix: prefix(),
      providers: [TransientPrices, CheckoutA, CheckoutB],
      logger,
    });
    const a = get(CheckoutA).prices;
    const b = get(CheckoutB).prices;
    expect(a).not.toBe(b);
    expect(await a.price('x')).toEqual({ sku: 'x', n: 1 });
    expect(await b.price('x')).toEqual({ sku: 'x', n: 1 });
    expect(await a.price('x')).toEqual({ sku: 'x', n: 1 });
    expect(loadsOf(`transient:${TransientPrices.run}:x`)).toBe(1);
    expect(await get(CacheService).get(`price:${TransientPrices.run}:x`)).toEqual({ sku: 'x', n: 1 });
    expect(await a.reprice()).toBe(`prices:${TransientPrices.run}`);
    expect(await b.reprice()).toBe(`prices:${TransientPrices.run}`);
    expect(warnings).toEqual([]);
  });

  it('an instance made for a request-scoped consumer runs bare: one warning naming the class and the remedy', async () => {
    TransientPrices.run = randomUUID();
    const { warnings, logger } = recordingLogger();
    const { moduleRef } = await createToolkitApp({
      keyPrefix: prefix(),
      providers: [TransientPrices, PerRequestCheckout],
      logger,
    });
    for (let i = 0; i < 2; i++) {
      const { prices } = await moduleRef.resolve(PerRequestCheckout);
      expect(await prices.reprice()).toBeNull();
    }
    const warning = warnings.filter((w) => w.includes('TransientPrices'));
    expect(warning).toHaveLength(1);
    expect(warning[0]).toMatch(/TRANSIENT[\s\S]*singleton providers only[\s\S]*LockService\.using/);
  });
});

@Injectable()
class LazyLedger {
  static run = '';
  @Cacheable({ key: (month: string) => `ledger:${LazyLedger.run}:${month}`, ttl: 60_000 })
  monthly(month: string) {
    return { month, n: bump(`ledger:${LazyLedger.run}:${month}`) };
  }

  @WithLock({ resource: (id: string) => `ledger:${id}` })
  close(_id: string): string | null {
    return heldResource();
  }
}

/** Provided by a factory: its class is known only once the lazy module built it. */
class FactoryRates {
  static run = '';
  @Cacheable({ key: (pair: string) => `rate:${FactoryRates.run}:${pair}`, ttl: 60_000 })
  rate(pair: string) {
    return { pair, n: bump(`rate:${FactoryRates.run}:${pair}`) };
  }
}

@Module({ providers: [TransientPrices], exports: [TransientPrices] })
class PricesModule {}

/** Injects the transient provider of a module the app loaded at start: its instance for this one is made at the load. */
@Injectable()
class LazyCheckout {
  constructor(readonly prices: TransientPrices) {}
}

@Module({
  imports: [PricesModule],
  providers: [LazyLedger, LazyCheckout, { provide: 'RATES', useFactory: () => new FactoryRates() }],
  exports: [LazyLedger, LazyCheckout, 'RATES'],
})
class LazyLedgerModule {}

@Injectable()
class Loader {
  constructor(@Inject(LazyModuleLoader) readonly lazy: LazyModuleLoader) {}
}

@Injectable()
class BadThreshold {
  // no ttl of its own: checked against lock.ttl (1 s) when prepared, which a lazily loaded module is at its first call
  @WithLock({ resource: 'bad-threshold', extensionThreshold: 5_000 })
  run(): string {
    bump('bad-threshold:ran');
    return 'ran';
  }
}

@Module({ providers: [BadThreshold], exports: [BadThreshold] })
class BadThresholdModule {}

@Injectable({ scope: Scope.REQUEST })
class LazyPerRequest {
  @WithLock({ resource: 'per-request' })
  run(): string | null {
    return heldResource();
  }
}

@Module({ providers: [LazyPerRequest] })
class LazyPerRequestModule {}

describe('a module loaded with LazyModuleLoader: its providers are decorated at their first call', () => {
  it('@Cacheable loads once and @WithLock holds its lock (a class provider)', async () => {
    LazyLedger.run = randomUUID();
    const { get } = await createToolkitApp({ keyPrefix: prefix(), providers: [Loader], imports: [PricesModule] });
    const ledger = (await get(Loader).lazy.load(() => LazyLedgerModule)).get(LazyLedger);
    expect(await ledger.monthly('2026-11')).toEqual({ month: '2026-11', n: 1 });
    expect(await ledger.monthly('2026-11')).toEqual({ month: '2026-11', n: 1 });
    expect(loadsOf(`ledger:${LazyLedger.run}:2026-11`)).toBe(1);
    expect(await ledger.close('42')).toBe('ledger:42');
  });

  it('a factory provider and a transient instance made for the lazy module are decorated too', async () => {
    FactoryRates.run = randomUUID();
    TransientPrices.run = randomUUID();
    const { get } = await createToolkitApp({ keyPrefix: prefix(), providers: [Loader], imports: [PricesModule] });
    const lazy = await get(Loader).lazy.load(() => LazyLedgerModule);
    const rates = lazy.get<FactoryRates>('RATES');
    await rates.rate('EURUSD');
    await rates.rate('EURUSD');
    expect(loadsOf(`rate:${FactoryRates.run}:EURUSD`)).toBe(1);
    const prices = lazy.get(LazyCheckout).prices;
    await prices.price('y');
    await prices.price('y');
    expect(loadsOf(`transient:${TransientPrices.run}:y`)).toBe(1);
    expect(await prices.reprice()).toBe(`prices:${TransientPrices.run}`);
  });

  it('decorated for the app that loaded it: two apps, the entries are under the loading app prefix only', async () => {
    LazyLedger.run = randomUUID();
    TransientPrices.run = randomUUID();
    const { warnings, logger } = recordingLogger();
    const apps = { providers: [Loader], imports: [PricesModule], logger };
    const first = await createToolkitApp({ keyPrefix: prefix(), ...apps });
    const second = await createToolkitApp({ keyPrefix: prefix(), ...apps });
    const lazy = await second.get(Loader).lazy.load(() => LazyLedgerModule);
    await lazy.get(LazyLedger).monthly('2026-10');
    const key = `ledger:${LazyLedger.run}:2026-10`;
    expect(await second.get(CacheService).get(key)).toEqual({ month: '2026-10', n: 1 });
    expect(await first.get(CacheService).get(key)).toBeUndefined();
    // the first app provides TransientPrices too, and is asked first: it neither takes nor warns about the instance
    // the second one made for its lazy module
    await lazy.get(LazyCheckout).prices.price('z');
    const priceKey = `price:${TransientPrices.run}:z`;
    expect(await second.get(CacheService).get(priceKey)).toEqual({ sku: 'z', n: 1 });
    expect(await first.get(CacheService).get(priceKey)).toBeUndefined();
    expect(warnings).toEqual([]);
  });

  it('options that fail preparation: each call rejects with InvalidOptionsError naming the method, never runs bare', async () => {
    const { errors, logger } = recordingLogger();
    const { get } = await createToolkitApp({
      keyPrefix: prefix(),
      providers: [Loader],
      lock: { ttl: 1_000 },
      logger,
    });
    const bad = (await get(Loader).lazy.load(() => BadThresholdModule)).get(BadThreshold);
    const ranBefore = loadsOf('bad-threshold:ran');
    for (let i = 0; i < 2; i++) {
      const failed = await Promise.resolve()
        .then(() => bad.run())
        .catch((err: unknown) => err);
      expect(failed).toBeInstanceOf(InvalidOptionsError);
      expect((failed as Error).message).toMatch(/BadThreshold\.run/);
    }
    expect(loadsOf('bad-threshold:ran')).toBe(ranBefore);
    expect(errors.filter((e) => e.includes('BadThreshold.run'))).toHaveLength(1);
  });

  it('a request-scoped provider of a lazy module: a warning naming the class and the remedy', async () => {
    const { warnings, logger } = recordingLogger();
    const { get } = await createToolkitApp({ keyPrefix: prefix(), providers: [Loader], logger });
    const lazy = await get(Loader).lazy.load(() => LazyPerRequestModule);
    const perRequest = await lazy.resolve(LazyPerRequest);
    expect(await perRequest.run()).toBeNull();
    const warning = warnings.filter((w) => w.includes('LazyPerRequest.run'));
    expect(warning).toHaveLength(1);
    expect(warning[0]).toMatch(/@WithLock[\s\S]*singleton provider[\s\S]*LockService\.using/);
  });
});

@Injectable({ scope: Scope.REQUEST })
class PerRequestReports {
  @WithLock({ resource: 'reports' })
  @Cacheable({ ttl: 60_000 })
  build(): string | null {
    return heldResource();
  }
}

describe('a REQUEST-scoped provider', () => {
  it('the start-up warning names the decorators, what is lost and the remedy', async () => {
    const { warnings, logger } = recordingLogger();
    await createToolkitApp({ keyPrefix: prefix(), providers: [PerRequestReports], logger });
    const warning = warnings.filter((w) => w.includes('PerRequestReports.build'));
    expect(warning).toHaveLength(1);
    expect(warning[0]).toMatch(/@WithLock, @Cacheable/);
    expect(warning[0]).toMatch(/no lock taken/);
    expect(warning[0]).toMatch(/singleton provider[\s\S]*LockService\.using \/ CacheService\.getOrSet/);
  });
});
