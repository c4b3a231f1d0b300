export const LOCK_METADATA = Symbol('rtk:lock');
