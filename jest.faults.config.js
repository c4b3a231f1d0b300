// `npm run test:faults`: the fault-injection suite under HTTP load on the sample app (test/faults/*.faults.ts).
// Same transform and global setup (shared servers) as jest.config.js; kept out of the default `npm test` because it
// takes minutes and needs the built sample (dist/sample/main.js).
import base from './jest.config.js';

/** @type {import('jest').Config} */
export default {
  ...base,
  testMatch: ['<rootDir>/test/faults/**/*.faults.ts'],
  testTimeout: 120_000,
};
