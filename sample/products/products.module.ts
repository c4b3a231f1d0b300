import { Module } from '@nestjs/common';
import { ProductsController } from './products.controller.js';
import { ProductsService } from './products.service.js';

/** The cache in action: cached reads with an X-Cache header, tag eviction on writes. */
@Module({ controllers: [ProductsController], providers: [ProductsService] })
export class ProductsModule {}
