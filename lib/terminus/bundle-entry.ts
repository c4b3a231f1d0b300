// `nestjs-redis-toolkit/terminus` for bundlers: package.json exports "module", a condition that webpack, esbuild,
// Rollup and Vite resolve and Node does not. index.ts itself, with no gate and no top-level await (which esbuild
// refuses in a CommonJS bundle). A bundler resolves the optional peer (@nestjs/terminus) at build time, and its own
// "could not resolve" error names it when it is not installed; at run time a bundled app has no node_modules where
// the gates' check (entry.ts, entry.cts) could find it, and would report it missing though it is in the bundle.
export * from './index.js';
