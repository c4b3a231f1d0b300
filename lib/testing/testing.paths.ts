/** Where the test helpers' servers live: their host, the port they never take, their state dir. */
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const HOST = '127.0.0.1';
/** Never touch the conventional port: a developer's (or CI's) real Redis may live there. */
export const FORBIDDEN_PORT = 6379;

/** Shared by every test process; pid files and per-server dirs live here so a later run can sweep them. */
export const STATE_DIR = join(tmpdir(), 'rtk-test-redis');
