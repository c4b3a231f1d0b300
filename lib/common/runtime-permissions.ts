// The runtimes' permission models, as the toolkit reads them: Node's (--permission) and Deno's (--allow-*).

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

/** A permission Deno is asked about: what the toolkit (or its test helpers) would reach (`run` unscoped). */
export type DenoPermission = { name: 'net'; host: string } | { name: 'run' } | { name: 'read' | 'write'; path: string };

/** What Deno's permission API answers (`Deno.permissions`, where the toolkit runs under Deno). */
interface DenoPermissions {
  querySync?(descriptor: DenoPermission): { state: string };
  requestSync?(descriptor: DenoPermission): { state: string };
}

/**
 * The permissions of `wanted` that Deno keeps this process from: none outside Deno. One Deno would ask about (state
 * `prompt`) is requested now, as the call needing it would: a terminal asks the user, and without one Deno refuses
 * it, as it would the call.
 */
export function deniedDenoPermissions<T extends DenoPermission>(wanted: readonly T[]): T[] {
  const permissions = (globalThis as { Deno?: { permissions?: DenoPermissions } }).Deno?.permissions;
  const { querySync, requestSync } = permissions ?? {};
  if (typeof querySync !== 'function' || typeof requestSync !== 'function') return [];
  return wanted.filter((descriptor) => {
    const state = querySync.call(permissions, descriptor).state;
    if (state !== 'prompt') return state !== 'granted';
    return requestSync.call(permissions, descriptor).state !== 'granted';
  });
}

/**
 * Whether Deno grants every permission of `wanted` already (always outside Deno), without asking: for what a helper
 * does only when it may (nothing that needs it prompts a terminal).
 */
export function grantedByDeno(wanted: readonly DenoPermission[]): boolean {
  const permissions = (globalThis as { Deno?: { permissions?: DenoPermissions } }).Deno?.permissions;
  const querySync = permissions?.querySync;
  if (typeof querySync !== 'function') return true;
  return wanted.every((descriptor) => querySync.call(permissions, descriptor).state === 'granted');
}

/** The `host:port`s of `hosts` that Deno's permissions keep this process from connecting to: none outside Deno. */
export function deniedDenoHosts(hosts: readonly string[]): string[] {
  return deniedDenoPermissions(hosts.map((host) => ({ name: 'net' as const, host }))).map((d) => d.host);
}

/**
 * Whether `err` is a runtime's refusal of a permission (Node's ERR_ACCESS_DENIED under --permission, Deno's
 * NotCapable), not an answer of the file system or the network: a path it may not read is not a path that is not
 * there. (Deno's PermissionDenied is the system's EACCES.)
 */
export function isPermissionRefusal(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const { code, name } = err as { code?: unknown; name?: unknown };
  return code === 'ERR_ACCESS_DENIED' || name === 'NotCapable';
}
