/**
 * Free loopback ports for test servers: free by the kernel's word, not handed out to a server of this process, and
 * not held by another live test process of the machine (reservePort).
 */
import { linkSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { grantedByDeno } from '../common/runtime-permissions.js';
import { RedisServerStartError } from './testing.errors.js';
import { FORBIDDEN_PORT, HOST, STATE_DIR } from './testing.paths.js';
import { refuseDeniedHelpers } from './testing.permissions.js';
import { hostProcess, installExitHook, isAlive, PORT_FILE, portOwner, registry } from './testing.processes.js';
import { errorCode } from './testing.resp.js';

const CLUSTER_BUS_OFFSET = 10_000;
const RESERVATION_GRANTS = [
  { name: 'write', path: STATE_DIR },
  { name: 'read', path: STATE_DIR },
  { name: 'run' },
] as const;

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, HOST, () => srv.close(() => resolve(true)));
  });
}

/**
 * A port the kernel considers free on 127.0.0.1 right now (bind to port 0, read it back, release it) that no server of
 * this process has and no live test process holds (reservePort): held for this one until it exits.
 */
export async function getFreePort(): Promise<number> {
  refuseDeniedHelpers('port');
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.unref();
      srv.once('error', reject);
      srv.listen(0, HOST, () => {
        const address = srv.address();
        const picked = typeof address === 'object' && address !== null ? address.port : 0;
        srv.close(() => resolve(picked));
      });
    });
    if (port !== 0 && port !== FORBIDDEN_PORT && !registry.ports.has(port) && reservePort(port)) return port;
  }
  throw new RedisServerStartError('getFreePort: could not find a free loopback port');
}

/**
 * Holds `port` for this process across the test processes of the machine (Jest's workers, two runs at once): false
 * when a live process holds it already, this one included (handed out before). Until 2026-12-07 a port was free when
 * the kernel said so, and a port whose server was stopped for a restart, or picked for a server started later, could
 * go to another worker while an app's clients kept reconnecting to it: they then reached that worker's new server (the
 * likely cause of 2 keys found, in a loaded run, in db 0 of the server of lock-quorum-late-check, which asserts that
 * its app wrote none there); and one process picking 1,500 ports got ~150 twice (testing-ports.spec.ts). A file per
 * port in STATE_DIR, made complete and at once (a link: never seen half-written), holding the owner's pid; gone at the
 * owner's exit (reapAll), or at the next run's sweep after a crash. Best effort: where the state dir cannot be written
 * (a permission model granting the network alone, Node's or Deno's) the kernel's word stands, as it did.
 */
export function reservePort(port: number): boolean {
  // Under Deno only with the grants already given (the state dir; --allow-run to tell a holder's pid alive): never a
  // prompt for what getFreePort alone did not need before
  if (!grantedByDeno(RESERVATION_GRANTS)) return true;
  const file = join(STATE_DIR, `${PORT_FILE}${port}`);
  const mine = `${file}.${hostProcess.pid}.tmp`;
  try {
    mkdirSync(STATE_DIR, { recursive: true });
    writeFileSync(mine, String(hostProcess.pid));
  } catch {
    return true; // not writable here: nothing to hold it with
  }
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        linkSync(mine, file);
        (registry.reservations ??= new Set()).add(file);
        installExitHook(); // removed at this process's exit, a server started or not
        return true;
      } catch (err) {
        if (errorCode(err) !== 'EEXIST') return true;
      }
      const owner = portOwner(`${PORT_FILE}${port}`);
      if (owner !== undefined && ownerAlive(Number(owner))) return false;
      rmSync(file, { force: true }); // its owner is gone
    }
    return false;
  } finally {
    rmSync(mine, { force: true });
  }
}

/** isAlive, read as alive where the runtime may not tell (a permission refusal): its port is left alone. */
function ownerAlive(pid: number): boolean {
  try {
    return isAlive(pid);
  } catch {
    return true;
  }
}

/** Cluster nodes also listen on port + 10000 (the cluster bus), which must be free and below 65536. */
export async function getFreeClusterPort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = await getFreePort();
    if (port + CLUSTER_BUS_OFFSET <= 65_535 && (await canBind(port + CLUSTER_BUS_OFFSET))) return port;
  }
  throw new RedisServerStartError(
    'getFreePort: could not find a free port pair (port, port + 10000) for a cluster node',
  );
}
