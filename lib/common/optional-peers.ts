import { createRequire } from 'node:module';
import { join } from 'node:path';
import { MissingPeerError } from './errors.js';

/**
 * The optional peers (package.json's peerDependenciesMeta): recognising Node's error for one that is not installed,
 * and saying so in the toolkit's words (which packages, and the install line). Used by the gateway's start
 * (notifications.providers.ts) and by the gates in front of the subpaths that import a peer (`<subpath>/entry.cts`).
 */

/**
 * A require() for the optional peers, resolving from this file (the package in node_modules, so the app's packages).
 * In a CommonJS bundle (esbuild --format=cjs) `import.meta` is empty and its url undefined, where createRequire would
 * throw at the first call: it resolves from the app's working directory then (process.cwd(), its node_modules).
 */
export function peerRequire(): NodeJS.Require {
  const url = (import.meta as { url?: string }).url;
  return createRequire(url ?? join(process.cwd(), 'index.js'));
}

/** webpack's own require: webpack replaces `typeof __webpack_require__` by 'function' in what it bundles. */
declare const __webpack_require__: unknown;

/**
 * True in a webpack bundle (@vercel/ncc's too, whose resolver has no `module` condition and so picks the gates, not
 * the subpaths' bundle entries). There the optional peers were resolved at build time and are inside the bundle, with
 * no node_modules beside it to find them in now, and an `import()` of a name known only at run time is webpack's empty
 * context, which rejects every name as not found: a peer check would report a bundled peer missing.
 */
export function inWebpackBundle(): boolean {
  return typeof __webpack_require__ === 'function';
}

/**
 * The error for `peer` not installed: Node's (ESM: ERR_MODULE_NOT_FOUND; CommonJS: MODULE_NOT_FOUND; npm and pnpm
 * installs), or Yarn Plug'n'Play's (MODULE_NOT_FOUND with `pnpCode` and `data.dependencyName`, its message naming the
 * package without quotes: "nestjs-redis-toolkit tried to access <peer> (a peer dependency) but it isn't provided").
 * Bun before 1.4 throws a ResolveMessage, which has Node's code and a message naming the package but is no Error:
 * until 2026-12-07 it was not recognised, so on Bun 1.3 a missing peer failed with Bun's own error, not
 * MissingPeerError.
 */
export function isNotFound(err: unknown, peer: string): boolean {
  const { code, pnpCode, data, message } = (err ?? {}) as {
    code?: unknown;
    pnpCode?: unknown;
    data?: { dependencyName?: unknown };
    message?: unknown;
  };
  if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') return false;
  if (typeof pnpCode === 'string') return data?.dependencyName === peer;
  return typeof message === 'string' && message.includes(`'${peer}'`);
}

/** '`user` needs the optional peers `install` (missing: `missing`). Install them: npm install `install`' */
export function missingPeersMessage(user: string, install: readonly string[], missing: readonly string[]): string {
  const [peers, them] = install.length === 1 ? ['peer', 'it'] : ['peers', 'them'];
  return (
    `${user} needs the optional ${peers} ${install.join(', ')} (missing: ${missing.join(', ')}). ` +
    `Install ${them}: npm install ${install.join(' ')}`
  );
}

/**
 * The gate of a subpath whose modules import optional peers: MissingPeerError naming the subpath, the peers of
 * `loads` that are not installed and the install line (`install`, the peers the feature needs), before the subpath's
 * modules are loaded. A peer that resolves, or fails to resolve for another reason, passes: loading it says the rest.
 *
 * The subpath's modules are ES modules: a static import of a missing package fails while Node links the module graph,
 * before any of its code runs, so a check module imported first would never run. Each gated subpath's exports target
 * is therefore a gate that calls this, then loads the subpath's index.ts: `entry.ts` ("default", for import) by a
 * dynamic import under top-level await, and `entry.cts` ("require") by require(esm), which refuses a module with
 * top-level await. One CommonJS gate for both would not do: Jest's ES module runtime runs a .cjs file with its own
 * require(), which cannot load an ES module before Node 24.9.
 */
export function checkPeers(entry: string, loads: readonly string[], install: readonly string[] = loads): void {
  if (inWebpackBundle()) return;
  const require = peerRequire();
  const missing = loads.filter((peer) => {
    try {
      require.resolve(peer);
      return false;
    } catch (err) {
      return isNotFound(err, peer);
    }
  });
  if (missing.length > 0) throw new MissingPeerError(missingPeersMessage(entry, install, missing));
}

type WsExceptionCtor = new (error: string | object) => Error;
let wsExceptionCtor: WsExceptionCtor | undefined;

/**
 * A `WsException` carrying `payload` (what a Socket.IO client receives on its `exception` event), for the guards that
 * refuse a gateway's message. @nestjs/websockets is an optional peer: imported only once such a message is refused,
 * when a gateway runs and so it is installed.
 */
export async function wsException(payload: object): Promise<Error> {
  wsExceptionCtor ??= (await import('@nestjs/websockets')).WsException as WsExceptionCtor;
  return new wsExceptionCtor(payload);
}
