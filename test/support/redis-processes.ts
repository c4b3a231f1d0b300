import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** True when `pid` is a live redis-server (a reaped or zombie process has no cmdline). Linux (/proc). */
export function isLiveRedisServer(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('redis-server');
  } catch {
    return false;
  }
}

/** The pid of a process that has exited (an owner that is gone). */
export async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid as number;
}
