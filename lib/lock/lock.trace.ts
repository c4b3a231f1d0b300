import { LockNotAcquiredError } from '../common/errors.js';
import type { Lock } from './lock.js';

// The traced acquisition's fields (docs/observability.md): the resource and, once acquired, the fencing token.
export const acquiring = (resource: string) => ({
  feature: 'lock' as const,
  operation: 'acquire',
  kind: 'lock',
  resource,
});
export const acquired = (lock: Lock | null) =>
  lock ? { outcome: 'acquired', fencingToken: lock.fencingToken } : { outcome: 'busy' };
export const busyOrFailed = (err: unknown) => (err instanceof LockNotAcquiredError ? 'busy' : 'failed');
