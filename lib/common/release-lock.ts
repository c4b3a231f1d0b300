import { LuaScript } from './lua-script.js';

/** DEL if still ours: 1, else 0. One script for the lock feature's locks and the cache's stampede lock. */
export const RELEASE_LOCK = LuaScript.fromFile<number>('rtk_release_lock', 'common/release-lock.lua', 1);
