/**
 * The soak framework: runs a workload for N operations in chunks; between chunks (nothing in flight) it forces a
 * GC and samples the heap, the listener counts of the given emitters and the process's active timers and handles.
 * A leak shows up as growth from the first quarter of the run to the last.
 *
 * Timers and handles are read when the process is quiet, deterministically:
 *  - the workload's own in-flight work is drained first (`quiesce`, e.g. messages published but not yet received);
 *  - the test runner's own transient timers are not ours: jest runs the soak in-band and its reporter creates a
 *    100 ms debounce timer every second (@jest/reporters Status._tick → _debouncedEmit), which a single reading
 *    catches about one time in ten — that was the "timers +1, handles +1" seen once on pub/sub with the heap flat.
 *    So each sample reads several times, 60-90 ms apart, and keeps the minimum: a 100 ms transient covers at most
 *    two readings, while anything left running (a leak) is in every one.
 *  - Transients of more than one source can take turns: jest's every second and the sampler test's own every 300 ms
 *    covered three readings between them (seen: 4 > 3). Eight readings span 420-630 ms: covering them takes four
 *    transients, at most one of them jest's in so short a window, and three of the 300 ms source leave two gaps of
 *    200 ms between them that one transient cannot both fill.
 *  - After an event-loop stall (a busy box) the gap timer fires late, and the readings either side of the stall can
 *    see two different transients (one made before it, one made by a timer that came due during it). A reading more
 *    than 90 ms after the one before starts the run of eight again; the minimum is kept over every reading taken (a
 *    leak is in all of them), and a sample takes at most three times as many readings.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { spawn } from 'node:child_process';
import type { EventEmitter } from 'node:events';

/** A full GC, without needing node --expose-gc on the command line. */
function getGc(): () => void {
  const existing = (globalThis as { gc?: () => void }).gc;
  if (existing) return existing;
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}
const gc = getGc();

/** The real process (jest gives test files a copy; see test/support/redis-server.ts). */
function hostProcess(): NodeJS.Process {
  try {
    return ((spawn.constructor as FunctionConstructor)('return globalThis')() as typeof globalThis).process;
  } catch {
    return process;
  }
}

export interface SoakSample {
  /** Operations done so far. */
  ops: number;
  heapUsed: number;
  listeners: number;
  timers: number;
  handles: number;
}

export interface SoakResult {
  name: string;
  ops: number;
  seconds: number;
  opsPerSec: number;
  errors: number;
  samples: SoakSample[];
  /** Median heap after GC in the last quarter ÷ the first quarter, minus 1 (0.05 = 5 % growth). */
  heapGrowth: number;
  /** Max in the last quarter − max in the first quarter. */
  listenerGrowth: number;
  timerGrowth: number;
  handleGrowth: number;
}

export interface SoakOptions {
  name: string;
  ops: number;
  /** Concurrent callers. Default 50. */
  concurrency?: number;
  /** Samples over the run (at least 8, so each quarter has 2+). Default 20. */
  samples?: number;
  /** One operation; `i` is its index. Errors are counted, not thrown (a soak reports, the test decides). */
  op: (i: number) => Promise<unknown>;
  /** Emitters whose listener counts must stay flat (clients, subscribers, gateways). */
  emitters?: () => EventEmitter[];
  /** Resolves once the work started by the operations so far has finished (called before each sample). */
  quiesce?: (opsDone: number) => Promise<void>;
  /** false: no GC and no meaningful heap figure (see `sample`). */
  measureHeap?: boolean;
}

/** Readings per sample and the gap between them (see the header: 2 × 60 ms spans more than a 100 ms transient). */
const READINGS = 8;
const READING_GAP_MS = 60;
/** A reading this much later than the gap after the one before is after a stall: the run of READINGS restarts. */
const READING_LATE_MS = 30;
/** At most three times the readings per sample (when stalls keep breaking the run, the minimum of all is kept). */
const MAX_READINGS_FACTOR = 3;

function countListeners(emitters: EventEmitter[]): number {
  return emitters.reduce((sum, e) => sum + e.eventNames().reduce((s, name) => s + e.listenerCount(name), 0), 0);
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)] ?? NaN;

/**
 * `measureHeap: false` skips the two full GCs before reading the heap: in the default suite the jest process holds
 * every earlier test file's modules, and those GCs took seconds per sample (the sampler's own tests read no heap).
 * `readings`: how many on-time readings make a sample (READINGS; the sampler's own tests use fewer).
 * `readResources`: what one reading sees (the process's active resources). The sampler's stall test passes the timers
 * it made itself: in the in-band default suite another file's timer could start and end around one of its samples.
 */
export async function sample(
  ops: number,
  emitters: EventEmitter[],
  measureHeap = true,
  readings = READINGS,
  readResources: () => readonly string[] = () => hostProcess().getActiveResourcesInfo(),
): Promise<SoakSample> {
  let timers = Infinity;
  let handles = Infinity;
  let onTime = 0; // readings in the current run, each at most READING_GAP_MS + READING_LATE_MS after the one before
  let lastAt = 0;
  for (let taken = 0; onTime < readings && taken < readings * MAX_READINGS_FACTOR; taken++) {
    if (taken > 0) await new Promise((r) => setTimeout(r, READING_GAP_MS));
    // Let closed sockets and finished timers be released before counting.
    await new Promise((r) => setImmediate(r));
    const resources = readResources();
    const at = performance.now();
    onTime = taken > 0 && at - lastAt <= READING_GAP_MS + READING_LATE_MS ? onTime + 1 : 1;
    lastAt = at;
    timers = Math.min(timers, resources.filter((r) => r === 'Timeout').length);
    handles = Math.min(handles, resources.length);
  }
  if (measureHeap) {
    gc();
    gc();
  }
  return { ops, heapUsed: process.memoryUsage().heapUsed, listeners: countListeners(emitters), timers, handles };
}

export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const {
    name,
    ops,
    concurrency = 50,
    samples: sampleCount = 20,
    op,
    emitters = () => [],
    quiesce,
    measureHeap = true,
  } = options;
  const count = Math.max(8, sampleCount);
  const chunk = Math.max(concurrency, Math.ceil(ops / count));
  const samples: SoakSample[] = [];
  let done = 0;
  let errors = 0;
  const started = performance.now();
  while (done < ops) {
    const end = Math.min(ops, done + chunk);
    let next = done;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < end) {
          const i = next++;
          try {
            await op(i);
          } catch {
            errors++;
          }
        }
      }),
    );
    done = end;
    await quiesce?.(done);
    samples.push(await sample(done, emitters(), measureHeap));
  }
  const seconds = (performance.now() - started) / 1000;
  const quarter = Math.max(2, Math.floor(samples.length / 4));
  // Skip the very first sample: it includes warm-up (JIT, connection buffers, script cache).
  const first = samples.slice(1, 1 + quarter);
  const last = samples.slice(-quarter);
  const growth = (pick: (s: SoakSample) => number): number =>
    Math.max(...last.map(pick)) - Math.max(...first.map(pick));
  return {
    name,
    ops: done,
    seconds,
    opsPerSec: done / seconds,
    errors,
    samples,
    heapGrowth: median(last.map((s) => s.heapUsed)) / median(first.map((s) => s.heapUsed)) - 1,
    listenerGrowth: growth((s) => s.listeners),
    timerGrowth: growth((s) => s.timers),
    handleGrowth: growth((s) => s.handles),
  };
}

export function formatSoak(r: SoakResult): string {
  const mb = (b: number): string => (b / 2 ** 20).toFixed(1);
  const heap = r.samples.map((s) => mb(s.heapUsed)).join(' ');
  return (
    `soak ${r.name}: ${r.ops.toLocaleString('en-US')} ops in ${r.seconds.toFixed(1)} s (${Math.round(r.opsPerSec).toLocaleString('en-US')}/s), ` +
    `${r.errors} errors; heap growth ${(r.heapGrowth * 100).toFixed(1)} % (MB after GC: ${heap}); ` +
    `listeners +${r.listenerGrowth}, timers +${r.timerGrowth}, handles +${r.handleGrowth}`
  );
}
