import { isIPv4, isIPv6 } from 'node:net';
import { domainToASCII } from 'node:url';

/** A DNS name as a Host header carries it (browsers send IDNs as punycode), lower case, without a trailing dot. */
const DNS_NAME = /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/;
const IPV4_LOOPBACK = /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/;

/**
 * The name part of a Host header, as the allow list compares it: lower case, the port and one trailing dot dropped, an
 * IPv6 address in brackets in its canonical spelling (`[0:0::1]` is `[::1]`); undefined when the header is not a host
 * (a bare IPv6 address, a port that is not digits, anything but a DNS name or an address).
 */
export function hostNameOf(header: string): string | undefined {
  const host = header.trim().toLowerCase();
  let name: string;
  let port: string;
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    if (end < 0 || !isIPv6(host.slice(1, end))) return undefined;
    name = canonicalIPv6(host.slice(1, end));
    port = host.slice(end + 1);
  } else {
    const colon = host.indexOf(':');
    name = colon < 0 ? host : host.slice(0, colon);
    port = colon < 0 ? '' : host.slice(colon);
    if (name.endsWith('.')) name = name.slice(0, -1);
    if (!DNS_NAME.test(name)) return undefined;
  }
  return port === '' || /^:\d{0,5}$/.test(port) ? name : undefined;
}

/** `[::1]` for `0:0:0:0:0:0:0:1`: the URL parser writes an IPv6 address the way browsers send it. */
function canonicalIPv6(address: string): string {
  return new URL(`http://[${address}]/`).hostname;
}

/**
 * A loopback name or address: `localhost` and its subdomains (RFC 6761: they resolve to loopback only, and browsers
 * answer them without asking DNS, so no attacker's page has such a name), `127.0.0.0/8`, `[::1]`.
 */
export function isLoopbackHost(name: string): boolean {
  if (name === 'localhost' || name.endsWith('.localhost') || name === '[::1]') return true;
  return IPV4_LOOPBACK.test(name) && isIPv4(name);
}

/**
 * An `allowedHosts` entry as the allow list holds it (a `.domain` keeps its leading dot), or undefined when it is not
 * a host name: a name (an IDN is turned into punycode, as browsers send it), an IPv4 address, an IPv6 address with
 * or without brackets; no port, scheme, path or wildcard.
 */
export function allowedHostEntry(entry: unknown): string | undefined {
  if (typeof entry !== 'string') return undefined;
  const wildcard = entry.startsWith('.');
  let name = (wildcard ? entry.slice(1) : entry).toLowerCase();
  if (!wildcard) {
    const bare = name.startsWith('[') && name.endsWith(']') ? name.slice(1, -1) : name;
    if (isIPv6(bare)) return canonicalIPv6(bare);
  }
  if (name.endsWith('.')) name = name.slice(0, -1);
  // domainToASCII gives '' for what is not a domain, and would take `a b` or `a*b` through as they are
  const ascii = /^[\p{L}\p{N}._-]+$/u.test(name) ? domainToASCII(name) : '';
  return DNS_NAME.test(ascii) ? (wildcard ? `.${ascii}` : ascii) : undefined;
}

/** Whether `name` (from hostNameOf) is loopback or in `allowed` (exactly, or under one of its `.domain` entries). */
export function isAllowedHost(name: string, allowed: readonly string[]): boolean {
  if (isLoopbackHost(name)) return true;
  return allowed.some((entry) =>
    entry.startsWith('.') ? name === entry.slice(1) || name.endsWith(entry) : name === entry,
  );
}
