import { LuaScript } from '../common/lua-script.js';
import type { LuaPath } from '../common/lua-sources.generated.js';

/** The name of a lib/lock/<file>.lua. */
type LockFile<P = LuaPath> = P extends `lock/${infer F}.lua` ? F : never;

const lua = (file: LockFile): LuaPath => `lock/${file}.lua`;

/** The script `lib/lock/<file>.lua`, registered as `rtk_<name>` with `keys` keys. */
const script = <T>(name: string, file: LockFile, keys: number): LuaScript<T> =>
  LuaScript.fromFile<T>(`rtk_${name}`, lua(file), keys);

/** The same for a script that draws fencing tokens: `fence.lua` (draw_fence) goes in front of it. */
const fencing = <T>(name: string, file: LockFile, keys: number): LuaScript<T> =>
  LuaScript.fromFile<T>(`rtk_${name}`, lua(file), keys, [lua('fence')]);

/** PEXPIRE if still ours: 1, else 0. */
export const EXTEND = script<number>('lock_extend', 'extend', 1);
/** DEL if still ours: 1, else 0. */
export { RELEASE_LOCK as RELEASE } from '../common/release-lock.js';
/** Quorum: raise a lagging node's fence counter while we hold the lock there: 1, else 0. */
export const RAISE_FENCE = script<number>('lock_raise_fence', 'raise-fence', 2);
/** Swap the owner token of a lock we hold for a local waiter's and draw its fencing token: the fence, or 0. */
export const HAND_OVER = fencing<number>('lock_hand_over', 'hand-over', 2);
/** SET NX PX + INCR of the fence counter for the locks of one tick (a lone one: a batch of one): fence or 0 each. */
export const ACQUIRE_MANY = fencing<(number | string)[]>('lock_acquire_many', 'acquire-many', 3);
/** RELEASE for the locks of one tick, each passed to a waiting service (granted, woken): 1, 2, 3 or 0 per lock. */
export const RELEASE_MANY = fencing<(number | string)[]>('lock_release_many', 'release-many', 3);
/** Quorum: wake the oldest listening waiting service of a lock released here unless held again: 1, 3 (refused), 0. */
export const WAKE = script<number>('lock_wake', 'wake', 2);
/** Semaphore: prune expired holders, take a permit per caller of one tick while fewer than the limit hold one: 1/0. */
export const SEMAPHORE_ACQUIRE = script<number[]>('semaphore_acquire', 'semaphore-acquire', 1);
/** Semaphore: the unexpired holders, counted by the server's clock. */
export const SEMAPHORE_HOLDERS = script<number>('semaphore_holders', 'semaphore-holders', 1);
/** Semaphore: push a permit's expiry if still ours, or pass it to a new owner (a local waiter): 1, else 0. */
export const SEMAPHORE_EXTEND = script<number>('semaphore_extend', 'semaphore-extend', 1);
/** Multi-resource lock on one server: all locks (one fencing token each) or none ({}). Any number of keys. */
export const MULTI_ACQUIRE = fencing<number[]>('lock_multi_acquire', 'multi-acquire', 2);
/** Multi-resource lock: extend all if all still ours: 1, else 0. Any number of keys. */
export const MULTI_EXTEND = script<number>('lock_multi_extend', 'multi-extend', 1);
/** Multi-resource lock: release what is still ours: 1 when all were, else 0. Any number of keys. */
export const MULTI_RELEASE = script<number>('lock_multi_release', 'multi-release', 1);
