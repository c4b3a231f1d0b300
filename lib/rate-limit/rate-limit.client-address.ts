import { BlockList, isIP } from 'node:net';
import type { TrustProxy } from './rate-limit.options.js';

const RANGES: Record<string, [string, number, 'ipv4' | 'ipv6'][]> = {
  loopback: [
    ['127.0.0.0', 8, 'ipv4'],
    ['::1', 128, 'ipv6'],
  ],
  linklocal: [
    ['169.254.0.0', 16, 'ipv4'],
    ['fe80::', 10, 'ipv6'],
  ],
  uniquelocal: [
    ['10.0.0.0', 8, 'ipv4'],
    ['172.16.0.0', 12, 'ipv4'],
    ['192.168.0.0', 16, 'ipv4'],
    ['fc00::', 7, 'ipv6'],
  ],
};

/**
 * Works out the client address of a request from the socket address and, only when proxies are trusted, the
 * X-Forwarded-For chain. The chain is read from the right (the entry our nearest proxy added) and the first address
 * that is not a trusted proxy is the client: entries further left were written by the client itself and can say
 * anything. IPv6 clients are reduced to their /64 (configurable), since one subscriber usually owns a whole /64.
 */
export class ClientAddressResolver {
  private readonly trusted: BlockList | undefined;
  private readonly hops: number | undefined;
  /** Whether `trustProxy` trusts this host's own proxies (true, or a list with 'loopback'): a unix socket's peer. */
  private readonly trustsLocal: boolean;

  constructor(
    trustProxy: TrustProxy,
    private readonly ipv6Subnet = 64,
  ) {
    this.trustsLocal = trustProxy === true || (Array.isArray(trustProxy) && trustProxy.includes('loopback'));
    if (typeof trustProxy === 'number') {
      this.hops = trustProxy;
    } else if (trustProxy === true || Array.isArray(trustProxy)) {
      const list = new BlockList();
      const entries = trustProxy === true ? ['loopback', 'linklocal', 'uniquelocal'] : trustProxy;
      for (const entry of entries) {
        const ranges = RANGES[entry];
        if (ranges) {
          for (const [net, bits, type] of ranges) list.addSubnet(net, bits, type);
          continue;
        }
        const [address, bits] = entry.split('/');
        const type = isIP(address) === 4 ? 'ipv4' : 'ipv6';
        if (bits === undefined) list.addAddress(address, type);
        else list.addSubnet(address, Number(bits), type);
      }
      this.trusted = list;
    }
  }

  /**
   * The client's address (IPv6 grouped by prefix); UNKNOWN_CLIENT when there is none: the socket has no address (a
   * unix socket's, `pipe`, or one already closed) and no trusted header names the client. The chain is read from the
   * right, one entry at a time, and only as far as the client: the entries left of it are whatever the client wrote
   * (a forged 16 KB header is a few string searches, not thousands of addresses to parse). Empty entries are skipped
   * and count as no hop. A unix socket's peer (a proxy on this host) is trusted as loopback is.
   */
  resolve(socketAddress: string | undefined, forwardedFor: string | string[] | undefined, pipe = false): string {
    const socket = normalizeAddress(socketAddress ?? '') || UNKNOWN_CLIENT;
    if (forwardedFor === undefined) return groupAddress(socket, this.ipv6Subnet);
    const hops = this.hops;
    if (hops === undefined ? !this.trusted || !this.isTrustedPeer(socket, pipe) : hops === 0)
      return groupAddress(socket, this.ipv6Subnet);
    const header = Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor;
    let client = socket;
    let taken = 0;
    let end = header.length;
    while (end > 0) {
      const comma = header.lastIndexOf(',', end - 1);
      const address = normalizeAddress(header.slice(comma + 1, end));
      end = comma === -1 ? 0 : comma;
      if (!address) continue;
      client = address;
      taken++;
      // hops: the one `hops` entries left of the socket (or the left-most); a trusted list: the first untrusted one
      if (hops === undefined ? !this.isTrusted(address) : taken >= hops) break;
    }
    return groupAddress(client, this.ipv6Subnet);
  }

  /** Whether X-Forwarded-For is read at all (`trustProxy` true, a list, or at least one hop). */
  get readsForwardedFor(): boolean {
    return this.trusted !== undefined || (this.hops ?? 0) > 0;
  }

  /** Whether a request from this socket address (`pipe`: a unix socket's) came through a proxy `trustProxy` trusts. */
  fromTrustedProxy(socketAddress: string | undefined, pipe = false): boolean {
    if (this.hops !== undefined) return this.hops > 0;
    return this.isTrustedPeer(normalizeAddress(socketAddress ?? ''), pipe);
  }

  /**
   * A unix socket has no peer address: its peer is a process on this host, trusted where loopback is (until 2026-12-06
   * it was never trusted, so behind a proxy on a unix socket with `trustProxy: true` every client was 'unknown').
   */
  private isTrustedPeer(address: string, pipe: boolean): boolean {
    return pipe && isIP(address) === 0 ? this.trustsLocal : this.isTrusted(address);
  }

  private isTrusted(address: string): boolean {
    const family = isIP(address);
    if (family === 0 || !this.trusted) return false;
    return this.trusted.check(address, family === 4 ? 'ipv4' : 'ipv6');
  }
}

/** The tracker of a request whose client has no address (see ClientAddressResolver.resolve). */
export const UNKNOWN_CLIENT = 'unknown';

/**
 * Trims, drops brackets, ports and zone ids, and turns IPv6 that carries an IPv4 address into that IPv4 address
 * (see embeddedIpv4), so an IPv4 client counts as itself whatever front it came through.
 */
export function normalizeAddress(raw: string): string {
  let a = raw.trim();
  if (a.startsWith('[')) a = a.slice(1, a.indexOf(']') === -1 ? undefined : a.indexOf(']'));
  else if (/^\d{1,3}(\.\d{1,3}){3}:\d+$/.test(a)) a = a.slice(0, a.lastIndexOf(':'));
  const zone = a.indexOf('%');
  if (zone !== -1 && a.includes(':')) a = a.slice(0, zone);
  return embeddedIpv4(a) ?? a;
}

/**
 * The IPv4 address inside an IPv6 one, in any spelling (dotted or hex): IPv4-mapped `::ffff:0:0/96`, the NAT64
 * well-known prefix `64:ff9b::/96` (RFC 6052) and the deprecated IPv4-compatible `::/96` (not `::` or `::1`).
 * Grouped by /64 like other IPv6, each of these would put every IPv4 client behind such a front into one bucket.
 * Network-specific NAT64 prefixes (e.g. `64:ff9b:1::/48`) embed the address at a place only the operator knows:
 * they stay IPv6.
 */
function embeddedIpv4(address: string): string | undefined {
  if (isIP(address) !== 6) return undefined;
  const w = expandIpv6(address);
  const zeroUpTo = (end: number): boolean => w.slice(0, end).every((word) => word === 0);
  const mapped = zeroUpTo(5) && w[5] === 0xffff;
  const nat64 = w[0] === 0x64 && w[1] === 0xff9b && w.slice(2, 6).every((word) => word === 0);
  const compatible = zeroUpTo(6) && w[6] !== 0;
  if (!mapped && !nat64 && !compatible) return undefined;
  return `${w[6] >> 8}.${w[6] & 0xff}.${w[7] >> 8}.${w[7] & 0xff}`;
}

/** IPv6 → its first `bits` bits as `prefix::/bits`; IPv4 and anything else unchanged. */
export function groupAddress(address: string, bits: number): string {
  if (isIP(address) !== 6 || bits >= 128) return address;
  const words = expandIpv6(address);
  const out: string[] = [];
  for (let i = 0; i < 8; i++) {
    const keep = Math.max(0, Math.min(16, bits - i * 16));
    const mask = keep === 0 ? 0 : (0xffff << (16 - keep)) & 0xffff;
    out.push((words[i] & mask).toString(16));
  }
  return `${out.slice(0, Math.ceil(bits / 16)).join(':')}::/${bits}`;
}

function expandIpv6(address: string): number[] {
  let a = address;
  // a trailing dotted IPv4 part (e.g. 64:ff9b::1.2.3.4) becomes two words
  const v4 = /(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(a);
  if (v4) {
    const [b1, b2, b3, b4] = v4.slice(1).map(Number);
    a = `${a.slice(0, v4.index)}${((b1 << 8) | b2).toString(16)}:${((b3 << 8) | b4).toString(16)}`;
  }
  const [head, tail] = a.split('::');
  const left = head ? head.split(':') : [];
  const right = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const fill = tail === undefined ? [] : Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...fill, ...right].map((w) => parseInt(w, 16) || 0);
}
