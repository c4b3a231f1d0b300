/**
 * endpointsOf: the `host:port`s a connection opens first, which Deno grants one by one (`--allow-net=host:port`):
 * refuseDeniedNetwork asks Deno about exactly these at start, so each must be written as Deno's `--allow-net` names it.
 */
import { endpointsOf } from '../../lib/connection/redis-client.factory.js';

describe('endpointsOf', () => {
  it('names the server, the startup nodes or the sentinels as host:port, IPv6 in brackets; none for a given client', () => {
    const named = [
      endpointsOf({ url: 'redis://user:pw@cache.internal:6380/2' }),
      endpointsOf({ url: 'rediss://[::1]/0' }),
      endpointsOf({ host: '10.0.0.5' }),
      endpointsOf({}),
      endpointsOf({ host: '::1', port: 7000 }),
      endpointsOf({
        cluster: [
          { host: '127.0.0.1', port: 7001 },
          { host: 'node-b', port: 7002 },
        ],
      }),
      endpointsOf({ sentinels: [{ host: 's1', port: 26379 }], name: 'mymaster' }),
      endpointsOf({ client: {} as never }),
    ];
    expect(named).toEqual([
      ['cache.internal:6380'],
      ['[::1]:6379'],
      ['10.0.0.5:6379'],
      ['127.0.0.1:6379'],
      ['[::1]:7000'],
      ['127.0.0.1:7001', 'node-b:7002'],
      ['s1:26379'],
      [],
    ]);
  });
});
