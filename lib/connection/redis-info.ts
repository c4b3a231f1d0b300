/** The `field:value` lines of an INFO reply (section headers skipped). */
export function parseInfo(info: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of info.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0 && !line.startsWith('#')) fields[line.slice(0, colon)] = line.slice(colon + 1);
  }
  return fields;
}

/**
 * For a server whose INFO replication says `role:slave`: `a replica of host:port` (its master); undefined for a
 * master. Every feature writes, and a replica answers writes with READONLY (or, with `replica-read-only no`, keeps
 * them only until its next sync with the master).
 */
export function replicaOf(fields: Record<string, string>): string | undefined {
  if (fields.role !== 'slave') return undefined;
  const master = fields.master_host === undefined ? 'its master' : `${fields.master_host}:${fields.master_port}`;
  return `a replica of ${master}`;
}

/** What writes do on a replica (see replicaOf), for health's reason. */
export function replicaWrites(fields: Record<string, string>): string {
  return fields.slave_read_only === '0'
    ? 'writes are kept only until its next sync with the master (replica-read-only no)'
    : 'writes are refused (READONLY)';
}
