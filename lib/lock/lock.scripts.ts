import { LuaScript } from '../common/lua-script.js';

/** SET NX PX + INCR of the fence counter: the fencing token, or 0 when held by another owner. */
export const ACQUIRE = LuaScript.fromFile<number>('rtk_lock_acquire', new URL('./acquire.lua', import.meta.url), 2);
/** PEXPIRE if still ours: 1, else 0. */
export const EXTEND = LuaScript.fromFile<number>('rtk_lock_extend', new URL('./extend.lua', import.meta.url), 1);
/** DEL if still ours: 1, else 0. */
export { RELEASE_LOCK as RELEASE } from '../common/release-lock.js';
/** Quorum: raise a lagging node's fence counter while we hold the lock there: 1, else 0. */
export const RAISE_FENCE = LuaScript.fromFile<number>(
  'rtk_lock_raise_fence',
  new URL('./raise-fence.lua', import.meta.url),
  2,
);
/** Swap the owner token of a lock we hold for a local waiter's and draw its fencing token: the fence, or 0. */
export const HAND_OVER = LuaScript.fromFile<number>(
  'rtk_lock_hand_over',
  new URL('./hand-over.lua', import.meta.url),
  2,
);
/** ACQUIRE for the locks of one tick (single server): one fence or 0 per lock. */
export const ACQUIRE_MANY = LuaScript.fromFile<(number | string)[]>(
  'rtk_lock_acquire_many',
  new URL('./acquire-many.lua', import.meta.url),
  2,
);
/** RELEASE for the locks of one tick (single server): 1 or 0 per lock. */
export const RELEASE_MANY = LuaScript.fromFile<(number | string)[]>(
  'rtk_lock_release_many',
  new URL('./release-many.lua', import.meta.url),
  1,
);
/** Semaphore: prune expired holders, take a permit when fewer than the limit hold one: 1, else 0. */
export const SEMAPHORE_ACQUIRE = LuaScript.fromFile<number>(
  'rtk_semaphore_acquire',
  new URL('./semaphore-acquire.lua', import.meta.url),
  1,
);
/** Semaphore: push a permit's expiry if still ours: 1, else 0. */
export const SEMAPHORE_EXTEND = LuaScript.fromFile<number>(
  'rtk_semaphore_extend',
  new URL('./semaphore-extend.lua', import.meta.url),
  1,
);
/** Semaphore: give a permit back: 1, or 0 when it was no longer ours. */
export const SEMAPHORE_RELEASE = LuaScript.fromFile<number>(
  'rtk_semaphore_release',
  new URL('./semaphore-release.lua', import.meta.url),
  1,
);
/** Multi-resource lock on one server: all locks (one fencing token each) or none ({}). Any number of keys. */
export const MULTI_ACQUIRE = LuaScript.fromFile<number[]>(
  'rtk_lock_multi_acquire',
  new URL('./multi-acquire.lua', import.meta.url),
  2,
);
/** Multi-resource lock: extend all if all still ours: 1, else 0. Any number of keys. */
export const MULTI_EXTEND = LuaScript.fromFile<number>(
  'rtk_lock_multi_extend',
  new URL('./multi-extend.lua', import.meta.url),
  1,
);
/** Multi-resource lock: release what is still ours: 1 when all were, else 0. Any number of keys. */
export const MULTI_RELEASE = LuaScript.fromFile<number>(
  'rtk_lock_multi_release',
  new URL('./multi-release.lua', import.meta.url),
  1,
);
/** Semaphore: swap a held permit's owner for a local waiter's: 1, or 0 when it was no longer held. */
export const SEMAPHORE_HAND_OVER = LuaScript.fromFile<number>(
  'rtk_semaphore_hand_over',
  new URL('./semaphore-hand-over.lua', import.meta.url),
  1,
);
