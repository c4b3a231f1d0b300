/**
 * Metadata key written by @WithLock. Every metadata key of the toolkit is a string `rtk:<feature>:<what>`, kept in
 * its feature's constants file: readable in a debugger and unlike any other library's.
 */
export const LOCK_METADATA = 'rtk:lock:with-lock';
