/**
 * What the test helpers need of a runtime's permission model (Node's --permission, Deno's), asked before anything
 * starts: every missing grant in one RedisServerPermissionError.
 */
import { join } from 'node:path';
import {
  type DenoPermission,
  deniedDenoPermissions,
  enforcedPermissions,
  networkGated,
} from '../common/runtime-permissions.js';
import { RedisServerPermissionError } from './testing.errors.js';
import { HOST, STATE_DIR } from './testing.paths.js';

/**
 * What a helper does: `server` starts one (a process, its state dir, the network), `port` only probes for a free port
 * (getFreePort: the network), `sweep` only ends crashed runs' servers and removes their state (sweepStaleServers: the
 * state dir, and on Deno the signals, which --allow-run alone allows).
 */
type HelperNeeds = 'port' | 'server' | 'sweep';

/**
 * Under Node's permission model or Deno's: every grant the helpers need that this process lacks, in one typed error
 * before anything starts. Without it the runtime's own refusal came from inside a spawn, a mkdtemp or a listen, one
 * flag per try: on Node ERR_ACCESS_DENIED, which for a state dir that did not exist when Node started names a flag
 * that was given ("Use --allow-fs-write": Node grants a path absent at start as a file, so nothing inside it may be
 * written); on Deno a NotCapable, and without --allow-net one thrown from the free-port probe's listen, uncaught, that
 * ended the process (until 2026-12-07). `needs`: see HelperNeeds.
 */
export function refuseDeniedHelpers(needs: HelperNeeds = 'server'): void {
  const node = deniedByNode(needs);
  const deno = deniedByDeno(needs);
  if (node.length === 0 && deno.length === 0) return;
  const [model, starts, missing] =
    node.length > 0 ? ["Node's permission model denies", 'Node', node] : ["Deno's permissions deny", 'deno run', deno];
  const what = needs === 'sweep' ? "sweep crashed runs' redis-servers" : 'start a redis-server';
  throw new RedisServerPermissionError(
    `nestjs-redis-toolkit/testing cannot ${what} here: ${model} what it needs. ` +
      `Add to the flags ${starts} starts with: ${missing.join(', ')}.`,
  );
}

/** The flags Node's permission model (where it is enforced) lacks for `needs`. */
function deniedByNode(needs: HelperNeeds): string[] {
  const permission = enforcedPermissions();
  if (permission === undefined) return [];
  const missing: string[] = [];
  if (needs === 'server' && !permission.has('child'))
    missing.push('--allow-child-process (each server is a redis-server process)');
  if (needs !== 'port' && !permission.has('fs.write', join(STATE_DIR, 'srv-'))) {
    const asFile = permission.has('fs.write', STATE_DIR)
      ? `; ${STATE_DIR} alone is granted as a file when it does not exist as Node starts`
      : '';
    missing.push(`--allow-fs-write=${join(STATE_DIR, '*')} (each server's dir and pid file${asFile})`);
  }
  if (needs !== 'sweep' && networkGated() && !permission.has('net'))
    missing.push("--allow-net (the free-port probe, each server's PING)");
  return missing;
}

/** The flags Deno's permissions (under Deno) lack for `needs`, each as narrow as the helpers need it. */
function deniedByDeno(needs: HelperNeeds): string[] {
  const wanted: [DenoPermission, string][] = [];
  if (needs !== 'sweep')
    wanted.push([{ name: 'net', host: HOST }, `--allow-net=${HOST} (the free-port probe, each server's PING)`]);
  if (needs !== 'port') {
    wanted.push(
      // unscoped: Deno lets a process signal a pid (stop(), pause(), the liveness checks) only with --allow-run alone
      [{ name: 'run' }, '--allow-run (each server is a redis-server process, signalled by its pid)'],
      [{ name: 'write', path: STATE_DIR }, `--allow-write=${STATE_DIR} (each server's dir and pid file)`],
      [{ name: 'read', path: STATE_DIR }, `--allow-read=${STATE_DIR} (the pid files of earlier runs)`],
    );
  }
  const denied = new Set(deniedDenoPermissions(wanted.map(([permission]) => permission)));
  return wanted.flatMap(([permission, flag]) => (denied.has(permission) ? [flag] : []));
}
