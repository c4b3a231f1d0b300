import type { GatewayHandshake } from './notifications.options.js';

/**
 * Cross-site WebSocket hijacking: a browser sends the site's cookies with a WebSocket handshake whatever page opened
 * it, so a connection that authenticates with the session cookie is only accepted from an allowed Origin. Default
 * (`allowedOrigins` undefined): the same origin only (the Origin's host is the request's Host, on HTTP/2 its
 * `:authority`). A handshake without an Origin header is not from a browser page (browsers always send one
 * cross-origin) and passes.
 */
export function originAllowed(
  handshake: GatewayHandshake,
  allowedOrigins: readonly string[] | '*' | undefined,
): boolean {
  if (allowedOrigins === '*') return true;
  const origin = header(handshake.headers.origin);
  if (origin === undefined) return true;
  const normalized = normalizeOrigin(origin);
  if (normalized === undefined) return false;
  if (allowedOrigins !== undefined) return allowedOrigins.includes(normalized);
  // HTTP/2 carries the host as `:authority` (an engine.io long-poll handshake on an h2 origin has no Host)
  const host = header(handshake.headers.host) ?? header(handshake.headers[':authority']);
  return host !== undefined && new URL(normalized).host === host.toLowerCase();
}

/** Whether the handshake would be authenticated by the session cookie: no `auth.token`, a Cookie header. */
export function usesCookie(handshake: GatewayHandshake): boolean {
  const token = handshake.auth?.token;
  return !(typeof token === 'string' && token.length > 0) && header(handshake.headers.cookie) !== undefined;
}

/** `https://app.example.com` (scheme, host and non-default port, lower case), or undefined when not an origin. */
export function normalizeOrigin(value: string): string | undefined {
  try {
    const url = new URL(value);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
    if (url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '') return undefined;
    return url.origin;
  } catch {
    return undefined;
  }
}

function header(value: string | string[] | undefined): string | undefined {
  const first = Array.isArray(value) ? value[0] : value;
  return typeof first === 'string' && first.length > 0 ? first : undefined;
}
