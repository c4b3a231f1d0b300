/**
 * The gateway on an HTTP/2 server that speaks no HTTP/1.1: a WebSocket is an HTTP/1.1 upgrade, so none connects there,
 * and a Socket.IO client that speaks only HTTP/1.1 (socket.io-client on Node; any browser against h2c, which browsers
 * do not speak) cannot connect at all. Clients that speak HTTP/2 still connect by long polling
 * (test/foundation/http2.spec.ts), so the start goes on, with a warning naming the remedy.
 */
import { Server as TlsServer } from 'node:tls';

/**
 * How the HTTP server the gateway is attached to refuses HTTP/1.1: 'h2c' (http2.createServer: HTTP/2 without TLS,
 * FastifyAdapter({ http2: true })), 'tls' (http2.createSecureServer without allowHTTP1), undefined for a server that
 * speaks HTTP/1.1 (http, https, or HTTP/2 over TLS with allowHTTP1) or one this cannot tell.
 */
export function http1Refused(server: unknown): 'h2c' | 'tls' | undefined {
  // Node's HTTP/2 servers (and only they) have updateSettings; their classes are not exported
  if (typeof (server as { updateSettings?: unknown } | undefined)?.updateSettings !== 'function') return undefined;
  if (!(server instanceof TlsServer)) return 'h2c';
  // the ALPN list the TLS server offers (wire format: length-prefixed names): allowHTTP1 adds http/1.1 to it
  const alpn = (server as { ALPNProtocols?: unknown }).ALPNProtocols;
  if (!(alpn instanceof Uint8Array)) return undefined;
  return Buffer.from(alpn.buffer, alpn.byteOffset, alpn.byteLength).includes('http/1.1') ? undefined : 'tls';
}

/** The start-up warning for a gateway on such a server (see http1Refused). */
export function http1RefusedWarning(kind: 'h2c' | 'tls'): string {
  const server =
    kind === 'h2c'
      ? 'an HTTP/2 server without TLS (h2c), which speaks no HTTP/1.1 and which browsers do not speak'
      : 'an HTTP/2 server over TLS without allowHTTP1';
  return (
    `notifications: the gateway is served by ${server}. A WebSocket is an HTTP/1.1 upgrade, so none connects ` +
    'there, and a Socket.IO client that speaks only HTTP/1.1 cannot connect at all; clients that speak HTTP/2 ' +
    'connect by long polling. Serve HTTP/2 over TLS with allowHTTP1: true (FastifyAdapter({ http2: true, https: ' +
    '{ allowHTTP1: true, ... } })), or end HTTP/2 at a proxy in front of the app (docs/pubsub.md, HTTP/2)'
  );
}
