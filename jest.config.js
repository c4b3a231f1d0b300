// Nest 12 is ESM only, so tests run as native ESM (node --experimental-vm-modules) and @swc/jest strips types,
// keeping legacy decorators and emitting decorator metadata, which Nest's DI needs (the options are shared with the
// child processes' module hooks: test/support/swc-options.mjs).
import { typeScriptSwcOptions } from './test/support/swc-options.mjs';

/** @type {import('jest').Config} */
export default {
  rootDir: '.',
  testEnvironment: 'node',
  testMatch: ['<rootDir>/test/**/*.spec.ts'],
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  // content-disposition 3 (under @fastify/static, which mercurius requires) is ESM only: Node 20 loads it with
  // require(esm), Jest's module runtime cannot before Node 24.9, so Jest compiles that one file to CommonJS.
  transformIgnorePatterns: ['/node_modules/(?!(@fastify/static/node_modules/)?content-disposition/)'],
  transform: {
    '/node_modules/(@fastify/static/node_modules/)?content-disposition/.+\\.js$': [
      '@swc/jest',
      { jsc: { target: 'es2022' }, module: { type: 'commonjs' } },
    ],
    '^.+\\.ts$': ['@swc/jest', typeScriptSwcOptions],
  },
  setupFilesAfterEnv: ['<rootDir>/test/support/per-file-setup.ts'],
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
  // `npm test` shards the suite by recorded time (scripts/test.mjs); alone, it sorts as jest's own does
  testSequencer: '<rootDir>/test/support/test-sequencer.mjs',
  testTimeout: 30_000,
  openHandlesTimeout: 2_000,
};
