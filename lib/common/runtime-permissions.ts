// The runtimes' permission models, as the toolkit reads them: Node's (--permission) and Deno's (--allow-net).

/** What Node's permission model answers (`process.permission`, Node 20+ under --permission). */
export interface NodePermissions {
  has(scope: string, reference?: string): boolean;
}

/**
 * Node's permission model where this process enforces it: undefined without --permission, and under
 * --permission-audit, which denies nothing (it logs) though `has()` answers false there as under --permission.
 */
export function enforcedPermissions(): NodePermissions | undefined {
  const permission = (process as { permission?: NodePermissions }).permission;
  if (permission === undefined || typeof permission.has !== 'function') return undefined;
  if (/--permission-audit\b/.test(`${process.execArgv.join(' ')} ${process.env.NODE_OPTIONS ?? ''}`)) return undefined;
  return permission;
}

/** Whether this Node gates the network (`--allow-net`, Node 25+): on 22 and 24 has('net') is false all the same. */
export function networkGated(): boolean {
  return process.allowedNodeEnvironmentFlags?.has('--allow-net') === true;
}

/** What Deno's permission API answers (`Deno.permissions`, where the toolkit runs under Deno). */
interface DenoPermissions {
  querySync?(descriptor: { name: 'net'; host: string }): { state: string };
  requestSync?(descriptor: { name: 'net'; host: string }): { state: string };
}

/**
 * The `host:port`s of `hosts` that Deno's permissions keep this process from connecting to: none outside Deno. One
 * Deno would ask about (state `prompt`) is requested now, as the connect would: a terminal asks the user, and without
 * one Deno refuses it, as it would the socket.
 */
export function deniedDenoHosts(hosts: readonly string[]): string[] {
  const permissions = (globalThis as { Deno?: { permissions?: DenoPermissions } }).Deno?.permissions;
  const { querySync, requestSync } = permissions ?? {};
  if (typeof querySync !== 'function' || typeof requestSync !== 'function') return [];
  return hosts.filter((host) => {
    const state = querySync.call(permissions, { name: 'net', host }).state;
    if (state !== 'prompt') return state !== 'granted';
    return requestSync.call(permissions, { name: 'net', host }).state !== 'granted';
  });
}
