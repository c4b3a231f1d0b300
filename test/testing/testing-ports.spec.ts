/**
 * getFreePort across the test processes of one machine (Jest's workers, two runs at once). Until 2026-12-07 a port was
 * free when the kernel said so: a port whose server a worker had stopped for a restart, or had picked for a server to
 * start later, could go to another worker while an app's clients kept reconnecting to it, and they reached that
 * worker's new server (the likely cause of 2 keys a loaded run found in db 0 of lock-quorum-late-check's server,
 * which asserts that its own app wrote none there). Now each port handed out is held by a reservation in the state
 * dir until its process exits (reservePort).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { sweepStaleServers } from '../../lib/testing/index.js';
import { reservePort } from '../../lib/testing/testing.ports.js';
import { PORT_FILE, STATE_DIR } from '../../lib/testing/testing.processes.js';
import { deadPid } from '../support/redis-processes.js';
import { spawnTestingChild, TESTING_CHILD_PRELUDE } from '../support/testing-child.js';

/**
 * Ports each child picks: two processes of 1,500 each met on ~150 of them before (the kernel's range is ~14,000), and
 * each got ~150 of its own twice (1,359 and 1,344 distinct: a port handed out and not started yet was free by the
 * kernel's word).
 */
const PICKS = 1_500;

/** A child that picks PICKS ports with getFreePort, prints them, and stays alive (holding them) until `release`. */
function picker(outDir: string) {
  const script = `${TESTING_CHILD_PRELUDE}
    const { getFreePort } = await import(pathToFileURL(join(outDir, 'testing/testing.redis-server.js')).href);
    const ports = [];
    for (let i = 0; i < ${PICKS}; i++) ports.push(await getFreePort());
    console.log(JSON.stringify(ports));
    process.stdin.on('end', () => process.exit(0));
    process.stdin.resume();
  `;
  const { child, output } = spawnTestingChild(script, outDir, 'ports', 'pipe');
  const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
  const ports = (async (): Promise<number[]> => {
    for (let i = 0; i < 1_200 && !output.stdout.includes('\n') && child.exitCode === null; i++)
      await new Promise((r) => setTimeout(r, 25));
    const line = output.stdout.split('\n').find((l) => l.startsWith('['));
    if (line === undefined) throw new Error(`the child reported no ports.\n${output.stdout}\n${output.stderr}`);
    return JSON.parse(line) as number[];
  })();
  return {
    ports,
    release: async (): Promise<number | null> => {
      child.stdin?.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

const reservation = (port: number): string => join(STATE_DIR, `${PORT_FILE}${port}`);

describe('getFreePort across processes', () => {
  it('two processes picking ports at the same time never get the same one (nor one twice), and leave none held', async () => {
    const dirs = [0, 1].map(() => mkdtempSync(join(STATE_DIR, 'child-build-')));
    const children = dirs.map((dir) => picker(dir));
    try {
      const [a, b] = await Promise.all(children.map((c) => c.ports));
      expect([new Set(a).size, new Set(b).size]).toEqual([PICKS, PICKS]);
      const inB = new Set(b);
      const both = a.filter((port) => inB.has(port));
      // before: ~150 ports in both lists (each was free by the kernel's word when the other asked)
      expect(both).toEqual([]);
      expect(a.every((port) => existsSync(reservation(port)))).toBe(true);
      expect(await Promise.all(children.map((c) => c.release()))).toEqual([0, 0]);
      // held until the process exits, then gone
      expect([...a, ...b].filter((port) => existsSync(reservation(port)))).toEqual([]);
    } finally {
      await Promise.all(children.map((c) => c.release()));
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it("a live process's reservation holds its port; a gone process's is taken over, and swept", async () => {
    // ports above the kernel's ephemeral range that no test picks: only the reservation files matter here
    const [live, gone, swept] = [64_991, 64_993, 64_995];
    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30_000)'], { stdio: 'ignore' });
    try {
      writeFileSync(reservation(live), String(sleeper.pid));
      writeFileSync(reservation(gone), String(await deadPid()));
      writeFileSync(reservation(swept), String(await deadPid()));
      expect(reservePort(live)).toBe(false);
      expect(readFileSync(reservation(live), 'utf8')).toBe(String(sleeper.pid));
      expect(reservePort(gone)).toBe(true);
      expect(readFileSync(reservation(gone), 'utf8')).toBe(String(process.pid));
      // this process's own: handed out already
      expect(reservePort(gone)).toBe(false);
      sweepStaleServers();
      expect([live, gone, swept].map((port) => existsSync(reservation(port)))).toEqual([true, true, false]);
    } finally {
      sleeper.kill('SIGKILL');
      for (const port of [live, gone, swept]) rmSync(reservation(port), { force: true });
    }
  });
});
