// `npm run test:soak`: long-running leak checks (test/soak/*.soak.ts), minutes, not part of `npm test` or CI.
// SOAK_SCALE=0.05 runs 5 % of the operation counts. Same transform and global setup as jest.config.js.
import base from './jest.config.js';

/** @type {import('jest').Config} */
export default {
  ...base,
  testMatch: ['<rootDir>/test/soak/**/*.soak.ts'],
  testTimeout: 30 * 60_000,
};
