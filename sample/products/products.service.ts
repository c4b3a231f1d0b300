import { Injectable } from '@nestjs/common';
import { CacheEvict } from '../../lib/index.js';

export interface Product {
  id: string;
  name: string;
  priceCents: number;
  updatedAt: Date;
}

/** Stands in for a slow database: every read takes ~50 ms, which the cache saves. */
@Injectable()
export class ProductsService {
  private readonly rows = new Map<string, Product>(
    [
      ['1', 'Green tea', 450],
      ['2', 'Espresso beans', 1_290],
      ['3', 'Oat biscuits', 320],
    ].map(([id, name, priceCents]) => [
      id as string,
      { id: id as string, name: name as string, priceCents: priceCents as number, updatedAt: new Date() },
    ]),
  );

  async list(): Promise<Product[]> {
    await slowQuery();
    return [...this.rows.values()];
  }

  /** null (not undefined) for an unknown id, so "not found" is cached too. */
  async find(id: string): Promise<Product | null> {
    await slowQuery();
    return this.rows.get(id) ?? null;
  }

  /** After a successful write, the product's entry and the list are evicted (on every instance, L1 included). */
  @CacheEvict({ tags: (id: string) => [`product:${id}`, 'products:list'] })
  async update(id: string, patch: Partial<Pick<Product, 'name' | 'priceCents'>>): Promise<Product | null> {
    const row = this.rows.get(id);
    if (!row) return null;
    const next = { ...row, ...patch, id, updatedAt: new Date() };
    this.rows.set(id, next);
    return next;
  }
}

const slowQuery = () => new Promise((r) => setTimeout(r, 50));
