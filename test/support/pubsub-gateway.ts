/** Helpers for the notifications gateway tests: boot an app with the gateway on HTTP and connect socket.io clients. */
import type { AddressInfo } from 'node:net';
import { io, type Socket as ClientSocket } from 'socket.io-client';
import type { WebSocket as WsSocket } from 'ws';
import type { PubSubUser } from '../../lib/advanced.js';
import type { NotificationAck, NotificationMessage } from '../../lib/notifications/index.js';
import { createToolkitApp, type ToolkitApp, type ToolkitAppOptions } from './toolkit-app.js';

/** `authenticate` for tests: `auth.token` `"u:<id>"` is user `<id>`; anything else is refused. */
export const tokenAuthenticate = (handshake: { auth: Record<string, unknown> }): PubSubUser | null => {
  const token = handshake.auth?.token;
  return typeof token === 'string' && token.startsWith('u:') ? { id: token.slice(2) } : null;
};

export interface GatewayApp extends ToolkitApp {
  url: string;
}

export async function createGatewayApp(options: ToolkitAppOptions & { namespace?: string } = {}): Promise<GatewayApp> {
  const { namespace, pubsub, ...rest } = options;
  const gateway = pubsub?.gateway === false ? false : { authenticate: tokenAuthenticate, ...pubsub?.gateway };
  const app = await createToolkitApp({
    ...rest,
    pubsub: { ...pubsub, gateway },
    http: true,
    ...({ notificationsGateway: namespace ? { namespace } : true } as object),
  });
  const address = app.app.getHttpServer().address() as AddressInfo;
  return Object.assign(app, { url: `http://127.0.0.1:${address.port}` });
}

const clients = new Set<ClientSocket>();

export interface TestClient {
  socket: ClientSocket;
  got: NotificationMessage[];
  subscribe(channel: unknown, lastId?: string): Promise<NotificationAck>;
  unsubscribe(channel: unknown): Promise<NotificationAck>;
  /** Sends any raw arguments as a `subscribe` message, with an ack callback last. */
  raw(event: string, ...args: unknown[]): Promise<NotificationAck>;
}

/** Connects and resolves once connected; rejects with the connect_error (message and `data`). */
export function connectClient(
  url: string,
  auth: Record<string, unknown> = {},
  namespace = '/notifications',
  extraHeaders?: Record<string, string>,
): Promise<TestClient> {
  const socket = io(`${url}${namespace}`, {
    auth,
    transports: ['websocket'],
    forceNew: true,
    reconnection: false,
    // Generous: a hundred handshakes at once on a busy 2-core machine took longer than 5 s (a bound, not a check).
    timeout: 30_000,
    ...(extraHeaders && { extraHeaders }),
  });
  clients.add(socket);
  const got: NotificationMessage[] = [];
  socket.on('notification', (m: NotificationMessage) => got.push(m));
  const emit = (event: string, ...args: unknown[]) =>
    new Promise<NotificationAck>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ack for ${event} within 30 s`)), 30_000);
      socket.emit(event, ...args, (ack: NotificationAck) => {
        clearTimeout(timer);
        resolve(ack);
      });
    });
  const client: TestClient = {
    socket,
    got,
    subscribe: (channel, lastId) => emit('subscribe', lastId === undefined ? { channel } : { channel, lastId }),
    unsubscribe: (channel) => emit('unsubscribe', { channel }),
    raw: (event, ...args) => emit(event, ...args),
  };
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(client));
    socket.once('connect_error', (err: Error & { data?: unknown }) => {
      socket.close();
      reject(err);
    });
  });
}

export function closeClients(): void {
  for (const socket of clients) socket.close();
  clients.clear();
}

/**
 * A raw engine.io/socket.io v4 client over `ws` that subscribes and then stops reading its TCP socket: the server's
 * send buffer for it fills up, as with a client on a very slow link.
 */
export async function connectStalledClient(
  url: string,
  token: string,
  channel: string,
  namespace = '/notifications',
): Promise<{ close(): void; closed: Promise<void>; send(event: string, body: unknown): void }> {
  const { WebSocket } = await import('ws');
  const ws = new WebSocket(`${url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`);
  let closedResolve!: () => void;
  const closed = new Promise<void>((r) => (closedResolve = r));
  ws.on('close', () => closedResolve());
  await new Promise<void>((resolve, reject) => {
    ws.on('error', reject);
    ws.on('message', (raw) => {
      const text = raw.toString();
      if (text.startsWith('0')) ws.send(`40${namespace},${JSON.stringify({ token })}`);
      else if (text.startsWith(`40${namespace}`))
        ws.send(`42${namespace},1${JSON.stringify(['subscribe', { channel }])}`);
      // the subscribe's ack (id 1) only: the acks of `send` (ids 2, 3, ... 10, 11 ...) may arrive before the pause
      // below takes hold, and `43/ns,12[...]` starts with `43/ns,1` too (it failed a CI run: JSON.parse of '2[...')
      else if (text.startsWith(`43${namespace},1[`)) {
        const [ack] = JSON.parse(text.slice(`43${namespace},1`.length)) as [{ ok: boolean }];
        if (ack.ok) resolve();
        else reject(new Error(`subscribe refused: ${text}`));
      } else if (text.startsWith('2')) ws.send('3');
    });
  });
  // Stop reading: the kernel buffers fill, then engine.io's write buffer for this socket grows.
  (ws as unknown as { _socket: { pause(): void } })._socket.pause();
  // It can still send (requests the server reads), it only stops reading what it is sent.
  let ackId = 1;
  const send = (event: string, body: unknown) => ws.send(`42${namespace},${++ackId}${JSON.stringify([event, body])}`);
  return { close: () => ws.terminate(), closed, send };
}

/**
 * A raw socket.io v4 connection over `ws` to `namespace` with `{ token }`, for frames as an attacker or a slow client
 * writes them: `onFrame` sees every frame from the start (pings are answered here); resolves once the namespace
 * accepted the connection, rejects with the refusal's frame.
 */
export async function connectRawClient(
  url: string,
  token: string,
  onFrame: (text: string, isBinary: boolean) => void,
  namespace = '/notifications',
): Promise<WsSocket> {
  const { WebSocket } = await import('ws');
  const ws: WsSocket = new WebSocket(`${url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`);
  ws.on('message', (raw, isBinary) => {
    const text = raw.toString();
    if (!isBinary && text === '2') ws.send('3');
    onFrame(text, isBinary);
  });
  await new Promise<void>((resolve, reject) => {
    ws.on('error', reject);
    const onOpen = (raw: Buffer) => {
      const text = raw.toString();
      if (text.startsWith('0')) ws.send(`40${namespace},${JSON.stringify({ token })}`);
      else if (text.startsWith(`40${namespace}`)) {
        ws.off('message', onOpen);
        resolve();
      } else if (text.startsWith(`44${namespace}`)) reject(new Error(text));
    };
    ws.on('message', onOpen);
  });
  return ws;
}
