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
