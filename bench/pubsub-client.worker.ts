/**
 * One Socket.IO client of the pub/sub benchmark, in its own thread so that receiving does not compete with the relay
 * for the main event loop. Records receipt latency against the absolute `sentAt` (timeOrigin + now, comparable across
 * threads) and counts receipts in shared memory for the publisher's flow control.
 */
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { io } from 'socket.io-client';

const { url, auth, channel, counter } = workerData as {
  url: string;
  auth: Record<string, unknown>;
  channel: string;
  counter: SharedArrayBuffer;
};
const received = new Int32Array(counter);
const port = parentPort;
if (!port) throw new Error('run as a worker');
let latencies: number[] = [];
const socket = io(url, { transports: ['websocket'], forceNew: true, reconnection: false, auth });
socket.on('connect', () => {
  socket.emit('subscribe', { channel }, (ack: { ok: boolean; error?: string }) =>
    port.postMessage({ type: 'ready', ok: ack.ok, error: ack.error }),
  );
});
socket.on('connect_error', (err: Error) => port.postMessage({ type: 'ready', ok: false, error: err.message }));
socket.on('notification', (m: { data: { sentAt: number } }) => {
  latencies.push(performance.timeOrigin + performance.now() - m.data.sentAt);
  Atomics.add(received, 0, 1);
});
port.on('message', (message: string) => {
  if (message === 'take') {
    port.postMessage({ type: 'latencies', latencies });
    latencies = [];
  } else if (message === 'close') {
    socket.close();
    port.close();
  }
});
