import type { LoggerService } from '@nestjs/common';
import { type ClientAddressResolver, normalizeAddress, UNKNOWN_CLIENT } from './rate-limit.client-address.js';

type Headers = Record<string, string | string[] | undefined> | undefined;

/**
 * The two proxy set-ups that turn the default tracker into one counter for every client, each said once per guard
 * (express-rate-limit's ERR_ERL_UNEXPECTED_X_FORWARDED_FOR and ERR_ERL_FORWARDED_HEADER): X-Forwarded-For while
 * `trustProxy` is off (behind a proxy every client is the proxy's address), and a trusted proxy that names the client
 * only in `Forwarded` or `X-Real-IP`, which the guard does not read. The tracker is left as it is: those headers are
 * never believed. Per request, until both are said: a test of the header the guard reads anyway, and two header
 * reads when X-Forwarded-For is absent behind a trusted proxy.
 */
export class ProxyHeaderWarnings {
  private unexpectedForwardedFor: boolean;
  private unreadHeader: boolean;
  private noAddressSaid = false;

  constructor(
    private readonly addresses: ClientAddressResolver,
    private readonly logger: LoggerService,
  ) {
    this.unexpectedForwardedFor = !addresses.readsForwardedFor;
    this.unreadHeader = addresses.readsForwardedFor;
  }

  /**
   * A request tracked as UNKNOWN_CLIENT: its socket had no address (`pipe`: the app listens on a unix socket or a
   * named pipe) and no trusted header named the client, so every such request shares one counter. Said once.
   */
  noAddress(pipe: boolean): void {
    if (this.noAddressSaid) return;
    this.noAddressSaid = true;
    const where = pipe
      ? 'the app listens on a unix socket or a named pipe, whose connections have none'
      : 'its connection had none, as a closed one has; or the app listens on a unix socket';
    this.logger.warn(
      `RateLimitGuard: a request came with no client address (${where}), so it was tracked as ` +
        `'${UNKNOWN_CLIENT}': every such request shares one counter. Behind a proxy that reaches the app over a unix ` +
        'socket, set rateLimit.trustProxy (true, or 1 for one proxy) so that the X-Forwarded-For entry the proxy ' +
        'adds names the client, or override getTracker. (Said once.)',
    );
  }

  check(
    socketAddress: string | undefined,
    forwardedFor: string | string[] | undefined,
    headers: Headers,
    pipe = false,
  ): void {
    if (forwardedFor !== undefined) {
      if (this.unexpectedForwardedFor) this.forwardedForIgnored(socketAddress);
      return;
    }
    if (!this.unreadHeader || headers === undefined) return;
    const forwarded = headers.forwarded !== undefined;
    const realIp = headers['x-real-ip'] !== undefined;
    if ((forwarded || realIp) && this.addresses.fromTrustedProxy(socketAddress, pipe)) {
      this.unreadHeader = false;
      const names = forwarded && realIp ? 'Forwarded and X-Real-IP' : forwarded ? 'Forwarded' : 'X-Real-IP';
      this.logger.warn(
        `RateLimitGuard: a request from the trusted proxy ${shown(socketAddress)} came with ${names} but no ` +
          'X-Forwarded-For, the only header the guard reads: it was tracked as the proxy, so every client behind ' +
          'that proxy shares one counter. Make the proxy send X-Forwarded-For, or override getTracker to read ' +
          `${names}. (Said once.)`,
      );
    }
  }

  private forwardedForIgnored(socketAddress: string | undefined): void {
    this.unexpectedForwardedFor = false;
    this.logger.warn(
      'RateLimitGuard: a request came with X-Forwarded-For, but rateLimit.trustProxy is off, so each client is ' +
        `tracked by its socket address (this one ${shown(socketAddress)}). Behind a proxy or load balancer every ` +
        'client then shares one counter: set rateLimit.trustProxy to the number of proxies or to their addresses. ' +
        'Not behind one: nothing to do (any client can send the header; it is not believed). (Said once.)',
    );
  }
}

const shown = (socketAddress: string | undefined): string => normalizeAddress(socketAddress ?? '') || UNKNOWN_CLIENT;
