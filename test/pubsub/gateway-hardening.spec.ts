import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { NotificationsGateway } from '../../lib/notifications/index.js';
import { PubSubService } from '../../lib/index.js';
import { trackForCleanup } from '../support/private-servers.js';
import { closeClients, connectClient, createGatewayApp } from '../support/pubsub-gateway.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

/** Issue 17 items 8 and 9: what a hostile or broken client can make one socket cost the server. */
afterEach(async () => {
  closeClients();
  await closeToolkitApps();
});

const uid = (): string => randomBytes(5).toString('hex');

describe('a socket that disconnects mid-subscribe (issue 17 item 9)', () => {
  it('leaves no relay and no Redis subscription behind after 30 connect/subscribe/disconnect cycles', async () => {
    const prefix = `gh${uid()}:`;
    // An authorize that looks something up (a database, a service): the socket leaves while it runs.
    let deciding = 0;
    const authorize = async (user: { id: string }, channel: string) => {
      deciding++;
      await sleep(50);
      return channel === 'news' || channel === `user:${user.id}`;
    };
    const app = await createGatewayApp({ keyPrefix: prefix, pubsub: { gateway: { authorize } } });
    const gateway = app.get(NotificationsGateway);
    for (let i = 0; i < 30; i++) {
      const c = await connectClient(app.url, { token: `u:cycle${i}` });
      // Sent, then gone before the ack: the server is still deciding (rate limit, authorize) when it leaves.
      c.socket.emit('subscribe', { channel: i % 2 === 0 ? 'news' : `user:cycle${i}` }, () => undefined);
      expect(await waitFor(() => deciding === i + 1, 5_000)).toBe(true);
      c.socket.disconnect();
    }
    const redis = trackForCleanup(new Redis(sharedServers().single.url));
    const numsub = async () => {
      const reply = (await redis.call('PUBSUB', 'NUMSUB', `${prefix}ps:news`)) as [string, number];
      return Number(reply[1]);
    };
    const settled = await waitFor(async () => gateway.stats().relays === 0 && (await numsub()) === 0, 5_000);
    expect({ relays: gateway.stats().relays, numsub: await numsub() }).toEqual({ relays: 0, numsub: 0 });
    expect(settled).toBe(true);
    expect(app.get(PubSubService).subscriptionCount).toBe(0);
    expect(gateway.stats().connections).toBe(0);
  });
});
