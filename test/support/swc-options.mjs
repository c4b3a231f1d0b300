// The @swc/core options that turn the TypeScript sources (lib/, test/, fixtures) into ES modules: read by
// jest.config.js (@swc/jest) and by test/support/ts-hooks.mjs (child processes), so both compile alike.
// Types stripped, legacy decorators kept with their metadata (Nest's DI needs it), class fields assigned as tsc does.
/** @type {import('@swc/core').Options} */
export const typeScriptSwcOptions = {
  jsc: {
    parser: { syntax: 'typescript', decorators: true },
    transform: { legacyDecorator: true, decoratorMetadata: true, useDefineForClassFields: false },
    target: 'es2022',
  },
  module: { type: 'es6' },
  sourceMaps: 'inline',
};
