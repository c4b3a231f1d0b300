export { SessionService, type CookieRequest } from './session.service.js';
export { SessionMiddleware } from './session.middleware.js';
export { SessionGuard } from './session.guard.js';
export { CurrentSession } from './session.decorators.js';
export { RedisSessionStore, type RedisSessionStoreOptions } from './session.store.js';
export { generateSessionId, isValidSessionId } from './session-id.js';
export {
  readSessionIdFromCookieHeader,
  signCookieValue,
  unsignCookieValue,
  type SessionCookieSource,
  type CookieResponse,
} from './session-cookie.js';
export { SESSION_UNAVAILABLE_MESSAGE, type SessionRequest } from './session.http.js';
export type { Session, SessionData, CreateSessionOptions } from './session.types.js';
export type { SessionOptions, SessionCookieOptions, ResolvedSessionOptions } from './session.options.js';
