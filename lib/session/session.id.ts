import { randomBytes } from 'node:crypto';

/** 32 random bytes, base64url: 43 characters of `[A-Za-z0-9_-]`. */
export const SESSION_ID_LENGTH = 43;
const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

/** A new session id: 256 bits from `crypto.randomBytes`, base64url (43 characters). */
export function generateSessionId(): string {
  return randomBytes(32).toString('base64url');
}

/** True for a well-formed session id. Anything else is rejected before Redis is asked. */
export function isValidSessionId(id: unknown): id is string {
  return typeof id === 'string' && id.length === SESSION_ID_LENGTH && SESSION_ID.test(id);
}
