import { Redis } from 'ioredis';

/** `INFO commandstats` of the server at `url`: calls by command (`publish`, `client|tracking`, ...). */
export async function commandCalls(url: string): Promise<Record<string, number>> {
  const admin = new Redis(url);
  try {
    const info = await admin.info('commandstats');
    const calls: Record<string, number> = {};
    for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls[m[1]] = Number(m[2]);
    return calls;
  } finally {
    await admin.quit();
  }
}

/** `CONFIG RESETSTAT` on the server at `url`: its command counts start from 0. */
export async function resetCommandCalls(url: string): Promise<void> {
  const admin = new Redis(url);
  try {
    await admin.config('RESETSTAT');
  } finally {
    await admin.quit();
  }
}
