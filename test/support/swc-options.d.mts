import type { Options } from '@swc/core';

/** test/support/swc-options.mjs: the @swc/core options of the jest transform and of ts-hooks.mjs. */
export declare const typeScriptSwcOptions: Options;
