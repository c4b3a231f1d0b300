/**
 * A 3-master Redis Cluster whose nodes serve clients and the cluster bus over TLS (`tls-cluster yes`), formed with
 * `redis-cli --tls --cluster create` on the TLS ports. Each node keeps a plaintext port for the harness's own checks;
 * CLUSTER SLOTS asked over TLS answers the TLS ports, so a TLS client only ever talks TLS.
 */
import { execFile } from 'node:child_process';
import { getFreePort, startRedisServer, type RedisServerHandle } from './redis-server.js';
import { rawCommand } from './resp.js';
import { tlsServerArgs, type TlsFiles } from './tls-certs.js';
import { waitFor } from './wait.js';

export interface TlsClusterHandle {
  nodes: RedisServerHandle[];
  /** The TLS port of each node, for `cluster: [...]`. */
  tlsNodes: { host: string; port: number }[];
  stop(): Promise<void>;
}

export async function startTlsCluster(files: TlsFiles): Promise<TlsClusterHandle> {
  const tlsPorts = await Promise.all([0, 1, 2].map(() => getFreePort()));
  const nodes: RedisServerHandle[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => n.stop()));
  };
  try {
    for (const tlsPort of tlsPorts) {
      nodes.push(
        await startRedisServer({
          cluster: true,
          args: [...tlsServerArgs(files, tlsPort), '--tls-cluster', 'yes', '--tls-replication', 'yes'],
        }),
      );
    }
    await new Promise<void>((resolve, reject) => {
      execFile(
        'redis-cli',
        ['--tls', '--cacert', files.caFile, '--cluster', 'create', ...tlsPorts.map((p) => `127.0.0.1:${p}`)].concat([
          '--cluster-yes',
        ]),
        { timeout: 20_000 },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stdout}\n${stderr}`)) : resolve()),
      );
    });
    const formed = await waitFor(async () => {
      const infos = await Promise.all(nodes.map((n) => rawCommand(n.port, ['CLUSTER', 'INFO'])));
      return infos.every((i) => /cluster_state:ok/.test(String(i)) && /cluster_known_nodes:3/.test(String(i)));
    }, 20_000);
    if (!formed) throw new Error('the TLS cluster did not reach cluster_state:ok within 20 s');
    return { nodes, tlsNodes: tlsPorts.map((port) => ({ host: '127.0.0.1', port })), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
