import { rawCommand } from './resp.js';

/** Clients connected to the server on `port` now, besides the one asking (INFO clients `connected_clients`). */
export async function othersConnected(port: number): Promise<number> {
  const info = String(await rawCommand(port, ['INFO', 'clients']));
  return Number(/connected_clients:(\d+)/.exec(info)?.[1]) - 1;
}
