// What the package checks (run.mjs, consumer-settings.mjs) share: running a command in a scratch app.
import { spawn } from 'node:child_process';

/** Runs a command to completion (killed after `timeout` ms): `{ ok, output }` (stdout and stderr together). */
export function run(cmd, args, cwd, timeout = 180_000) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, env: { ...process.env, FORCE_COLOR: '0' } });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    const timer = setTimeout(() => {
      output += `\n(killed after ${timeout} ms)`;
      child.kill('SIGKILL');
    }, timeout);
    child.once('error', (err) => (output += String(err)));
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ ok: code === 0, output });
    });
  });
}
