import { Body, Controller, Get, NotFoundException, Param, Put, Res, UseGuards } from '@nestjs/common';
import { CacheService, RateLimitGuard } from '../../lib/index.js';
import { type CacheStatus } from '../../lib/advanced.js';
import { ProductsService, type Product } from './products.service.js';

const HEADER: Record<CacheStatus, string> = { hit: 'HIT', miss: 'MISS', stale: 'STALE', grace: 'STALE' };

/** Express's `Response` and Fastify's `FastifyReply` both set a header with `header(name, value)`. */
interface HeaderResponse {
  header(name: string, value: string): unknown;
}

/**
 * GET /products and GET /products/:id are cached (header `X-Cache: HIT | MISS | STALE`): fresh for 30 s, then served
 * stale for another 60 s while one refresh runs. PUT /products/:id evicts the product and the list by tag.
 * Every route is rate-limited per client IP by the module's default policy (RATE_LIMIT_LIMIT, default 100/min;
 * RATE_LIMIT_ALGORITHM, default sliding-window).
 */
@Controller('products')
@UseGuards(RateLimitGuard)
export class ProductsController {
  constructor(
    private readonly products: ProductsService,
    private readonly cache: CacheService,
  ) {}

  @Get()
  async list(@Res({ passthrough: true }) res: HeaderResponse): Promise<Product[]> {
    const { value, status } = await this.cache.getOrSetWithStatus('products:list', () => this.products.list(), {
      tags: ['products', 'products:list'],
    });
    res.header('X-Cache', HEADER[status]);
    return value;
  }

  @Get(':id')
  async get(@Param('id') id: string, @Res({ passthrough: true }) res: HeaderResponse): Promise<Product> {
    const { value, status } = await this.cache.getOrSetWithStatus(`products:${id}`, () => this.products.find(id), {
      tags: ['products', `product:${id}`],
    });
    res.header('X-Cache', HEADER[status]);
    if (!value) throw new NotFoundException(`no product ${id}`);
    return value;
  }

  @Put(':id')
  async update(@Param('id') id: string, @Body() body: { name?: unknown; priceCents?: unknown }): Promise<Product> {
    const patch: { name?: string; priceCents?: number } = {};
    if (typeof body?.name === 'string') patch.name = body.name;
    if (typeof body?.priceCents === 'number' && Number.isInteger(body.priceCents)) patch.priceCents = body.priceCents;
    const updated = await this.products.update(id, patch);
    if (!updated) throw new NotFoundException(`no product ${id}`);
    return updated;
  }
}
