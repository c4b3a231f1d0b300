/**
 * TLS beyond one server (issue 17, second pass): a master found through Sentinel, the sentinels themselves, and lock
 * quorum nodes. The attack is a silent downgrade: `connection.tls` given, yet the toolkit talks plaintext (the
 * password and every value in clear) or skips certificate verification.
 */
import 'reflect-metadata';
import { CacheService, LockService, REDIS_CLIENT, RedisUnavailableError } from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { getFreePort, startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { startSentinel, type SentinelHandle } from '../support/sentinel.js';
import { startTlsCluster, type TlsClusterHandle } from '../support/tls-cluster.js';
import { makeTlsFiles, tlsServerArgs, tlsSupport, type TlsFiles } from '../support/tls-certs.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

const unsupported = tlsSupport();

if (unsupported && process.env.CI)
  it('redis-server supports TLS and openssl is installed (CI must run the TLS tests)', () => {
    throw new Error(`TLS tests cannot run under CI: ${unsupported}`);
  });

const failure = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => undefined,
    (err: unknown) => err,
  );

(unsupported ? describe.skip : describe)(
  `TLS with Sentinel and quorum nodes${unsupported ? ` (skipped: ${unsupported})` : ''}`,
  () => {
    let files: TlsFiles;
    let master: RedisServerHandle;
    let masterTlsPort: number;
    /** Monitors the master's TLS port over TLS, and listens on a TLS port of its own. */
    let tlsSentinel: SentinelHandle;
    let sentinelTlsPort: number;
    /** Monitors the master's plaintext port. */
    let plainSentinel: SentinelHandle;

    beforeAll(async () => {
      files = makeTlsFiles();
      masterTlsPort = await getFreePort();
      master = await startRedisServer({ args: tlsServerArgs(files, masterTlsPort) });
      sentinelTlsPort = await getFreePort();
      tlsSentinel = await startSentinel({
        name: 'tlsmaster',
        master: { host: '127.0.0.1', port: masterTlsPort },
        extra: [
          `tls-port ${sentinelTlsPort}`,
          `tls-cert-file ${files.certFile}`,
          `tls-key-file ${files.keyFile}`,
          `tls-ca-cert-file ${files.caFile}`,
          'tls-auth-clients no',
          'tls-replication yes',
        ],
      });
      plainSentinel = await startSentinel({ name: 'plainmaster', master: { host: '127.0.0.1', port: master.port } });
    }, 60_000);

    afterAll(async () => {
      await closeToolkitApps();
      await tlsSentinel?.stop();
      await plainSentinel?.stop();
      await master?.stop();
      files?.remove();
    });

    afterEach(closeToolkitApps);

    it('connection.tls reaches the TLS master a sentinel names', async () => {
      const { get } = await createToolkitApp({
        target: {
          sentinels: [{ host: '127.0.0.1', port: tlsSentinel.port }],
          name: 'tlsmaster',
          tls: { ca: files.ca },
        },
        connectTimeout: 2_000,
      });
      const client = get<RedisClient>(REDIS_CLIENT);
      expect(await client.set('rtk:tls:sentinel', 'v')).toBe('OK');
      expect(await client.get('rtk:tls:sentinel')).toBe('v');
    });

    it('connection.tls is never dropped: a master on a plaintext port fails the start, no plaintext fallback', async () => {
      const error = await failure(
        createToolkitApp({
          target: {
            sentinels: [{ host: '127.0.0.1', port: plainSentinel.port }],
            name: 'plainmaster',
            tls: { ca: files.ca },
          },
          connectTimeout: 1_000,
          commandTimeout: 300,
        }),
      );
      expect(error).toBeInstanceOf(RedisUnavailableError);
    });

    it('connection.tls verifies the master certificate found through a sentinel (an untrusted CA fails the start)', async () => {
      const error = await failure(
        createToolkitApp({
          target: {
            sentinels: [{ host: '127.0.0.1', port: tlsSentinel.port }],
            name: 'tlsmaster',
            tls: { ca: files.otherCa },
          },
          connectTimeout: 1_000,
          commandTimeout: 300,
        }),
      );
      expect(error).toBeInstanceOf(RedisUnavailableError);
      expect((error as Error).message).toMatch(/certificate|self.signed|verify/i);
    });

    it('sentinelTls: the sentinels over TLS, their certificate verified', async () => {
      const target = {
        sentinels: [{ host: '127.0.0.1', port: sentinelTlsPort }],
        name: 'tlsmaster',
        tls: { ca: files.ca },
      };
      const { get } = await createToolkitApp({
        target: { ...target, sentinelTls: { ca: files.ca } },
        connectTimeout: 2_000,
      });
      expect(await get<RedisClient>(REDIS_CLIENT).ping()).toBe('PONG');
      await closeToolkitApps();
      const untrusted = await failure(
        createToolkitApp({
          target: { ...target, sentinelTls: { ca: files.otherCa } },
          connectTimeout: 1_000,
          commandTimeout: 300,
        }),
      );
      expect(untrusted).toBeInstanceOf(RedisUnavailableError);
      // ioredis closes a sentinel connection whose handshake failed and reports only that it closed: the message
      // names the sentinels, not the certificate.
      expect((untrusted as Error).message).toContain(`via 127.0.0.1:${sentinelTlsPort}: All sentinels are unreachable`);
    });

    it('lock quorum nodes over TLS: rediss:// urls with the CA work; an untrusted CA fails the start', async () => {
      const url = `rediss://127.0.0.1:${masterTlsPort}`;
      const { get } = await createToolkitApp({
        lock: { quorum: { nodes: [{ url, tls: { ca: files.ca } }] } },
      });
      const held = await get(LockService).acquire(`tls-quorum-${Date.now()}`, { ttl: 2_000 });
      expect(held.fencingToken).toBeGreaterThan(0);
      await held.release();
      await closeToolkitApps();
      const error = await failure(
        createToolkitApp({
          lock: { quorum: { nodes: [{ url, tls: { ca: files.otherCa } }] } },
          connectTimeout: 1_000,
          commandTimeout: 300,
        }),
      );
      expect(error).toBeInstanceOf(RedisUnavailableError);
      expect((error as Error).message).toMatch(/certificate|self.signed|verify/i);
    });
  },
);

(unsupported ? describe.skip : describe)(
  `TLS on Redis Cluster${unsupported ? ` (skipped: ${unsupported})` : ''}`,
  () => {
    let files: TlsFiles;
    let cluster: TlsClusterHandle;

    beforeAll(async () => {
      files = makeTlsFiles();
      cluster = await startTlsCluster(files);
    }, 60_000);

    afterAll(async () => {
      await closeToolkitApps();
      await cluster?.stop();
      files?.remove();
    });

    afterEach(closeToolkitApps);

    it('tls applies to every node (each connection encrypted); keys on all three masters work', async () => {
      const { get } = await createToolkitApp({
        target: { cluster: cluster.tlsNodes, tls: { ca: files.ca } },
        connectTimeout: 2_000,
      });
      const cache = get(CacheService);
      const keys = Array.from({ length: 30 }, (_, i) => `tls-cluster-${i}`);
      await Promise.all(keys.map((k) => cache.set(k, k, { ttl: 10_000 })));
      expect(await Promise.all(keys.map((k) => cache.get(k)))).toEqual(keys);
      const held = await get(LockService).acquire(`tls-cluster-lock-${Date.now()}`, { ttl: 2_000 });
      await held.release();
      const client = get<RedisClient>(REDIS_CLIENT) as unknown as {
        nodes(role: string): { options: { port: number }; stream?: { encrypted?: boolean } }[];
      };
      const nodes = client.nodes('all');
      expect(nodes.map((n) => n.options.port).sort()).toEqual(cluster.tlsNodes.map((n) => n.port).sort());
      expect(nodes.filter((n) => n.stream?.encrypted !== true)).toEqual([]);
    });

    it('an untrusted certificate fails the start with RedisUnavailableError naming the certificate', async () => {
      const error = await failure(
        createToolkitApp({
          target: { cluster: cluster.tlsNodes, tls: { ca: files.otherCa } },
          connectTimeout: 1_000,
          commandTimeout: 300,
        }),
      );
      expect(error).toBeInstanceOf(RedisUnavailableError);
      expect((error as Error).message).toMatch(/certificate|self.signed|verify/i);
    });
  },
);
