import 'reflect-metadata';
import { UseGuards } from '@nestjs/common';
import { SubscribeMessage, WebSocketGateway } from '@nestjs/websockets';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import { io, type Socket } from 'socket.io-client';
import { RateLimitGuard, Throttle } from '../../lib/index.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS_AND_TARGETS } from '../support/toolkit-app.js';

@WebSocketGateway({ namespace: '/rl-test' })
@UseGuards(RateLimitGuard)
class PingGateway {
  @SubscribeMessage('ping')
  @Throttle({ limit: 2, ttl: 60_000 })
  ping(): string {
    return 'pong';
  }

  @SubscribeMessage('free')
  free(): string {
    return 'free';
  }
}

const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.disconnect();
  await closeToolkitApps();
});

async function connect(port: number): Promise<Socket> {
  const socket = io(`http://127.0.0.1:${port}/rl-test`, { transports: ['websocket'], reconnection: false });
  sockets.push(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  return socket;
}

describe.each(PLATFORMS_AND_TARGETS)(
  'RateLimitGuard on a WebSocket gateway (socket.io on %s, %s)',
  (platform, target) => {
    it('limits a @SubscribeMessage handler and answers a refusal with a WsException carrying retry info', async () => {
      const app = await createToolkitApp({
        platform,
        target,
        http: true,
        keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
        providers: [PingGateway],
      });
      const { port } = (app.app.getHttpServer() as Server).address() as { port: number };
      const socket = await connect(port);
      const exceptions: unknown[] = [];
      socket.on('exception', (e: unknown) => exceptions.push(e));
      expect(await socket.timeout(2_000).emitWithAck('ping')).toBe('pong');
      expect(await socket.timeout(2_000).emitWithAck('ping')).toBe('pong');
      await expect(socket.timeout(500).emitWithAck('ping')).rejects.toThrow(); // no answer: refused
      expect(exceptions).toEqual([{ statusCode: 429, message: 'Too Many Requests', retryAfterMs: expect.any(Number) }]);
      const { retryAfterMs } = exceptions[0] as { retryAfterMs: number };
      expect(retryAfterMs).toBeGreaterThan(55_000);
      expect(retryAfterMs).toBeLessThanOrEqual(60_000);
      // same client address, new connection: still limited (the tracker is the address, not the socket)
      const other = await connect(port);
      await expect(other.timeout(500).emitWithAck('ping')).rejects.toThrow();
      // a handler without @Throttle falls back to rateLimit.defaults (100 per minute)
      expect(await other.timeout(2_000).emitWithAck('free')).toBe('free');
    });
  },
);
