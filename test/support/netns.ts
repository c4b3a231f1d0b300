/**
 * Redis servers as separate hosts on a private network: each runs in its own network namespace, joined to this
 * host by a veth pair with a /30 in 10.200.0.0/16 that we assign on these veths only (nothing is routed anywhere
 * else). A partition is the namespace's end of the link set down: packets to it are dropped on the veth, so open
 * connections hang and new ones time out, as with a real cut cable (no tc netem or iptables on these machines).
 *
 * Needs root and iproute2. Safety nets, so no traffic for these addresses can leave the box and nothing outlives
 * the test:
 *  - a `blackhole` route (high metric) for each /30 in the root namespace: if the connected route disappears, the
 *    traffic is dropped here instead of following the default route;
 *  - every namespace, route and server is removed by `stop()`, and by a synchronous exit hook on the real process if
 *    the test dies first; namespaces left by a dead earlier run (name `rtkp<pid>-*`, pid gone) are removed first.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { probePing, rawCommand } from './resp.js';
import { findOnPath } from './redis-server.js';

const PREFIX = 'rtkp';
/** Inside each namespace, so any port is free; not 6379 so it is never mistaken for the machine's Redis. */
const PORT = 6390;

/** Why namespaced hosts cannot be created here, or undefined when they can. */
export function netnsUnsupported(): string | undefined {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'not root (ip netns needs root)';
  if (!findOnPath('ip')) return 'iproute2 (`ip`) is not on PATH';
  if (!findOnPath('redis-server')) return 'redis-server is not on PATH';
  return undefined;
}

function ip(args: string[], allowFail = false): string {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0 && !allowFail) throw new Error(`ip ${args.join(' ')} failed: ${r.stderr || r.error?.message}`);
  return r.stdout;
}

/** The real process (jest gives test files a copy whose 'exit' never fires; see redis-server.ts). */
function hostProcess(): NodeJS.Process {
  try {
    return ((spawn.constructor as FunctionConstructor)('return globalThis')() as typeof globalThis).process;
  } catch {
    return process;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Removes namespaces (and their servers, veths and routes) left by earlier runs whose process is gone. */
function sweepStale(): void {
  for (const line of ip(['netns', 'list'], true).split('\n')) {
    const name = line.split(' ')[0];
    const m = new RegExp(`^${PREFIX}(\\d+)-(\\d+)$`).exec(name ?? '');
    if (!m || alive(Number(m[1]))) continue;
    removeNamespace(name, Number(m[1]), Number(m[2]));
  }
}

function subnet(owner: number, index: number): { host: string; peer: string; net: string } {
  // One /30 per host; the third octet from the owner pid so two runs on one box do not collide.
  const third = owner % 250;
  const base = index * 4;
  return {
    host: `10.200.${third}.${base + 1}`,
    peer: `10.200.${third}.${base + 2}`,
    net: `10.200.${third}.${base}/30`,
  };
}

function vethName(owner: number, index: number): string {
  return `${PREFIX}${owner % 100_000}h${index}`; // ≤ 15 characters
}

/** Synchronous: usable from an exit hook. SIGKILLs the namespace's processes, then deletes it and the route. */
function removeNamespace(ns: string, owner: number, index: number): void {
  const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', timeout: 5_000 }).stdout ?? '';
  for (const pid of pids
    .split('\n')
    .map(Number)
    .filter((p) => p > 0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  // A namespace whose processes are still exiting is only detached by `netns del`; wait for them briefly.
  for (let i = 0; i < 50 && pids.split('\n').some((p) => Number(p) > 0 && alive(Number(p))); i++) {
    spawnSync('sleep', ['0.05']);
  }
  ip(['netns', 'del', ns], true);
  ip(['link', 'del', vethName(owner, index)], true); // normally gone with the namespace
  ip(['route', 'del', 'blackhole', subnet(owner, index).net], true);
}

export interface NetnsRedis {
  readonly index: number;
  readonly namespace: string;
  /** The server's address inside its namespace (reachable only from this host). */
  readonly host: string;
  readonly port: number;
  readonly url: string;
  /** Cuts the link (the namespace's end of the veth down): traffic is dropped both ways. */
  partition(): void;
  heal(): void;
  partitioned(): boolean;
}

export interface NetnsHosts {
  readonly servers: NetnsRedis[];
  /** Kills the servers and removes every namespace, veth and route. Idempotent. */
  stop(): Promise<void>;
}

const registry = new Set<() => void>();
let hookInstalled = false;

function installExitHook(): void {
  if (hookInstalled) return;
  hookInstalled = true;
  hostProcess().on('exit', () => {
    for (const cleanup of registry) cleanup();
  });
}

/** Starts `count` Redis servers, each in its own namespace with its own link. Throws (after cleaning up) on failure. */
export async function startNamespacedRedis(count: number, extraArgs: string[] = []): Promise<NetnsHosts> {
  const why = netnsUnsupported();
  if (why) throw new Error(`cannot create network namespaces: ${why}`);
  sweepStale();
  installExitHook();
  const owner = hostProcess().pid;
  const children: ChildProcess[] = [];
  const created: number[] = [];
  const cleanup = (): void => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const index of created) removeNamespace(`${PREFIX}${owner}-${index}`, owner, index);
    created.length = 0;
  };
  registry.add(cleanup);
  const servers: NetnsRedis[] = [];
  try {
    for (let index = 0; index < count; index++) {
      const ns = `${PREFIX}${owner}-${index}`;
      const veth = vethName(owner, index);
      const peer = `${veth}p`;
      const addr = subnet(owner, index);
      removeNamespace(ns, owner, index); // a leftover of this very pid (pid reuse)
      created.push(index);
      ip(['netns', 'add', ns]);
      ip(['link', 'add', veth, 'type', 'veth', 'peer', 'name', peer]);
      ip(['link', 'set', peer, 'netns', ns]);
      ip(['addr', 'add', `${addr.host}/30`, 'dev', veth]);
      ip(['link', 'set', veth, 'up']);
      ip(['route', 'add', 'blackhole', addr.net, 'metric', '4000']);
      ip(['-n', ns, 'addr', 'add', `${addr.peer}/30`, 'dev', peer]);
      ip(['-n', ns, 'link', 'set', peer, 'up']);
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      const child = spawn(
        'ip',
        [
          'netns',
          'exec',
          ns,
          'redis-server',
          '--bind',
          addr.peer,
          '--port',
          String(PORT),
          // Reachable only from this host through our veth; no password so the toolkit connects as in the others.
          '--protected-mode',
          'no',
          '--save',
          '',
          '--appendonly',
          'no',
          ...extraArgs,
        ],
        { stdio: 'ignore' },
      );
      child.unref();
      children.push(child);
      let isCut = false;
      servers.push({
        index,
        namespace: ns,
        host: addr.peer,
        port: PORT,
        url: `redis://${addr.peer}:${PORT}`,
        partition: () => {
          ip(['-n', ns, 'link', 'set', peer, 'down']);
          isCut = true;
        },
        heal: () => {
          ip(['-n', ns, 'link', 'set', peer, 'up']);
          isCut = false;
        },
        partitioned: () => isCut,
      });
    }
    const deadline = Date.now() + 15_000;
    for (const s of servers) {
      while ((await probePing(s.port, { host: s.host, timeoutMs: 1_000 })) !== 'pong') {
        if (Date.now() > deadline) throw new Error(`redis-server in ${s.namespace} did not answer PING within 15 s`);
        await new Promise((r) => setTimeout(r, 50));
      }
      await rawCommand(s.port, ['FLUSHALL'], { host: s.host, timeoutMs: 5_000 });
    }
  } catch (err) {
    cleanup();
    registry.delete(cleanup);
    throw err;
  }
  return {
    servers,
    stop: async () => {
      cleanup();
      registry.delete(cleanup);
    },
  };
}
