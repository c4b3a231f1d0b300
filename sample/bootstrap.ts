import type { INestApplication, NestApplicationOptions } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AppModule } from './app.module.js';

export const SAMPLE_PLATFORMS = ['express', 'fastify'] as const;
export type SamplePlatform = (typeof SAMPLE_PLATFORMS)[number];

/** `PLATFORM` (default express); anything else stops the sample at start, naming the choices. */
export function samplePlatform(value: string | undefined = process.env.PLATFORM): SamplePlatform {
  if (value === undefined || value === '') return 'express';
  const platform = SAMPLE_PLATFORMS.find((p) => p === value);
  if (platform === undefined) {
    throw new Error(`PLATFORM must be ${SAMPLE_PLATFORMS.map((p) => `"${p}"`).join(' or ')}, got "${value}"`);
  }
  return platform;
}

/** The sample app on Express or Fastify (loaded only when asked for: it is an optional dependency). */
export async function createSampleApp(
  platform: SamplePlatform,
  options: NestApplicationOptions = {},
): Promise<INestApplication> {
  if (platform === 'fastify') {
    const { FastifyAdapter } = await import('@nestjs/platform-fastify').catch((err: unknown) => {
      throw new Error('PLATFORM=fastify needs @nestjs/platform-fastify: npm i @nestjs/platform-fastify', {
        cause: err,
      });
    });
    return NestFactory.create(AppModule, new FastifyAdapter(), options);
  }
  return NestFactory.create(AppModule, options);
}
