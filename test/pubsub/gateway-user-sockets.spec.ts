/**
 * What one user can make the gateway hold: at most `maxSocketsPerUser` connections per instance (a stolen token or a
 * runaway client opening connections without end cost memory per socket before), and nothing left behind by a client
 * that connects and disconnects the namespace again and again over one connection.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';
import { InvalidOptionsError } from '../../lib/index.js';
import { NotificationsGateway } from '../../lib/notifications/index.js';
import { closeClients, connectClient, createGatewayApp, type TestClient } from '../support/pubsub-gateway.js';
import { closeToolkitApps, PLATFORMS } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(async () => {
  closeClients();
  await closeToolkitApps();
});

const uid = (): string => randomBytes(5).toString('hex');

/** The connect_error code of a refused connection, or 'connected'. */
async function outcome(url: string, token: string): Promise<string> {
  return connectClient(url, { token }).then(
    () => 'connected',
    (err: Error & { data?: { code?: string } }) => err.data?.code ?? err.message,
  );
}

describe.each(PLATFORMS)('maxSocketsPerUser on %s', (platform) => {
  it('one connection past the limit is refused with E_TOO_MANY_CONNECTIONS; a closed one makes room', async () => {
    const app = await createGatewayApp({
      platform,
      keyPrefix: `gu${uid()}:`,
      pubsub: { gateway: { maxSocketsPerUser: 3 } },
    });
    const gateway = app.get(NotificationsGateway);
    const alice: TestClient[] = [];
    for (let i = 0; i < 3; i++) alice.push(await connectClient(app.url, { token: 'u:alice' }));
    const refused = await connectClient(app.url, { token: 'u:alice' }).then(
      () => undefined,
      (err: Error & { data?: { code?: string } }) => err,
    );
    expect(refused?.data?.code).toBe('E_TOO_MANY_CONNECTIONS');
    expect(refused?.message).toBe('at most 3 connections per user on this server (maxSocketsPerUser)');
    expect(gateway.stats()).toMatchObject({ connections: 3, refused: 1 });
    // Another user is not affected.
    expect(await outcome(app.url, 'u:bob')).toBe('connected');
    // The sockets still open work.
    expect(await alice[0].subscribe('user:alice')).toMatchObject({ ok: true });
    // One leaves: the next connection of alice is admitted once the server has seen it go.
    alice[2].socket.close();
    expect(await waitFor(() => gateway.stats().connections === 3, 5_000)).toBe(true);
    expect(await outcome(app.url, 'u:alice')).toBe('connected');
    expect(await outcome(app.url, 'u:alice')).toBe('E_TOO_MANY_CONNECTIONS');
    expect(gateway.stats()).toMatchObject({ connections: 4, refused: 2 });
  });
});

it('the default is 50 connections per user', async () => {
  const app = await createGatewayApp({ keyPrefix: `gu${uid()}:` });
  for (let i = 0; i < 50; i += 10) {
    const ten = await Promise.all(Array.from({ length: 10 }, () => outcome(app.url, 'u:many')));
    expect(ten).toEqual(Array(10).fill('connected'));
  }
  expect(await outcome(app.url, 'u:many')).toBe('E_TOO_MANY_CONNECTIONS');
  expect(await outcome(app.url, 'u:other')).toBe('connected');
  expect(app.get(NotificationsGateway).stats()).toMatchObject({ connections: 51, refused: 1 });
});

it('maxSocketsPerUser must be a whole number from 1', async () => {
  for (const bad of [0, 1.5, '5']) {
    const err = await createGatewayApp({
      keyPrefix: `gu${uid()}:`,
      pubsub: { gateway: { maxSocketsPerUser: bad as number } },
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toContain('pubsub.gateway.maxSocketsPerUser');
  }
});

it('30 namespace connects and disconnects over one connection leave no listener and no socket counted', async () => {
  const namespace = '/notifications';
  const app = await createGatewayApp({
    keyPrefix: `gu${uid()}:`,
    pubsub: {
      gateway: {
        maxSocketsPerUser: 1,
        // bound to a session, as the default authenticate does: the socket is also bound to its revocations
        authenticate: (handshake) => ({ id: String(handshake.auth.token), sessionId: 'session-mux' }),
      },
    },
  });
  const gateway = app.get(NotificationsGateway);
  const internals = gateway as unknown as {
    server: { server: { engine: { clients: Record<string, { listenerCount(event: string): number }> } } };
    revocations: { sessionOf: Map<unknown, string> };
  };
  const ws = new WebSocket(`${app.url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`);
  const frames: string[] = [];
  ws.on('message', (raw) => {
    const text = raw.toString();
    if (text === '2') ws.send('3');
    else frames.push(text);
  });
  try {
    expect(await waitFor(() => frames.some((f) => f.startsWith('0')), 5_000)).toBe(true);
    const conns = () => Object.values(internals.server.server.engine.clients);
    expect(conns()).toHaveLength(1);
    const baseline = conns()[0].listenerCount('close');
    for (let i = 0; i < 30; i++) {
      const connected = () => frames.filter((f) => f.startsWith(`40${namespace},`)).length;
      const before = connected();
      ws.send(`40${namespace},${JSON.stringify({ token: 'mux' })}`);
      // one socket at a time (the limit is 1): each disconnect was seen before the next connect
      expect(await waitFor(() => connected() === before + 1, 5_000)).toBe(true);
      expect(frames.at(-1)).not.toContain('E_TOO_MANY_CONNECTIONS');
      expect(gateway.stats().connections).toBe(1);
      ws.send(`41${namespace},`);
      expect(await waitFor(() => gateway.stats().connections === 0, 5_000)).toBe(true);
    }
    expect(conns()[0].listenerCount('close')).toBe(baseline);
    expect(internals.revocations.sessionOf.size).toBe(0);
  } finally {
    ws.close();
  }
});
