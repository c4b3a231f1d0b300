import type { INestApplication, Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';

export const platform = 'express';

export function createApp(module: Type<unknown>): Promise<INestApplication> {
  return NestFactory.create(module, { logger: ['error'] });
}
