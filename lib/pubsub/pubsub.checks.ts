import { InvalidKeyError, InvalidOptionsError, SerializationError } from '../common/errors.js';
import { KeyBuilder } from '../common/keys.js';
import { isPattern, isStreamId, MAX_STREAM_ID_PART } from './pubsub.types.js';

/**
 * InvalidKeyError unless `channel` can be published to: a valid name (KeyBuilder.validate: not empty, at most 1024
 * bytes, no control characters) without the pattern characters `*`, `?` and `[`. publish and notifyUser (durable or
 * not, before its stream is written) check alike.
 */
export function checkPublishChannel(channel: string): void {
  KeyBuilder.validate(channel, 'channel');
  if (isPattern(channel))
    throw new InvalidKeyError(`cannot publish to a pattern (${channel}): * ? and [ are not allowed in a channel name`);
}

/**
 * SerializationError when the serialized payload `body` has more than `max` (pubsub.maxMessageBytes) UTF-8 bytes;
 * counted only when it might (a UTF-16 unit is at most 3 bytes). Checked before the message joins a batch, so only
 * its own call fails.
 */
export function checkMessageSize(channel: string, body: string, max: number): void {
  if (body.length * 3 <= max) return;
  const bytes = Buffer.byteLength(body);
  if (bytes > max) {
    throw new SerializationError(
      `the message to ${channel} is ${bytes} bytes serialized, more than pubsub.maxMessageBytes (${max}); ` +
        'nothing was sent',
    );
  }
}

/**
 * The largest `limit` replay accepts. Any integer up to it is a valid XRANGE COUNT, and the gateway's `maxReplay`
 * (an integer option) reaches replay unchanged; a stream holds about `durable.maxLen` entries, so that is what a
 * larger limit reads.
 */
export const MAX_REPLAY_LIMIT = Number.MAX_SAFE_INTEGER;

/**
 * InvalidOptionsError unless `limit` is an integer from 1 to MAX_REPLAY_LIMIT: 1.5, Infinity, NaN or 1e20 reached
 * XRANGE COUNT, which Redis refused, and was counted and logged as a Redis failure.
 */
export function checkReplayLimit(limit: unknown): void {
  if (typeof limit === 'number' && Number.isInteger(limit) && limit >= 1 && limit <= MAX_REPLAY_LIMIT) return;
  const shown = typeof limit === 'string' ? JSON.stringify(limit.slice(0, 60)) : String(limit);
  throw new InvalidOptionsError(`replay limit must be an integer from 1 to ${MAX_REPLAY_LIMIT}, got ${shown}`);
}

/**
 * InvalidKeyError unless `afterId` is a stream id that something can come after: Redis refuses an id past 2^64-1 in
 * either part (ERR Invalid stream ID) and the largest id as the exclusive start of XRANGE (ERR invalid start ID for
 * the interval). A gateway client's `lastId` arrives here: it gets our message, and no Redis failure is counted.
 */
export function checkReplayStart(afterId: unknown): void {
  if (!isStreamId(afterId)) {
    const shown = typeof afterId === 'string' ? JSON.stringify(afterId.slice(0, 60)) : typeof afterId;
    throw new InvalidKeyError(
      `lastId must be a stream id like 1700000000000-0, each part at most ${MAX_STREAM_ID_PART}, got ${shown}`,
    );
  }
  const [ms, seq] = afterId.split('-').map(BigInt);
  if (ms === MAX_STREAM_ID_PART && seq === MAX_STREAM_ID_PART)
    throw new InvalidKeyError(`lastId ${afterId} is the largest stream id: no message can come after it`);
}

/**
 * replay's arguments after `userId`: checkReplayStart, checkReplayLimit, and `options` undefined or an object whose
 * `newest` is a boolean or absent (else InvalidOptionsError). Returns whether the newest `limit` are asked for.
 */
export function checkReplayArgs(afterId: unknown, limit: unknown, options: unknown): boolean {
  checkReplayStart(afterId);
  checkReplayLimit(limit);
  if (options === undefined) return false;
  const newest = (options as { newest?: unknown } | null)?.newest;
  if (typeof options === 'object' && options !== null && !Array.isArray(options)) {
    if (newest === undefined || typeof newest === 'boolean') return newest === true;
  }
  const shown =
    options === null
      ? 'null'
      : Array.isArray(options)
        ? 'an array'
        : typeof options === 'object'
          ? `newest: ${typeof newest}`
          : typeof options;
  throw new InvalidOptionsError(`replay options must be undefined or { newest?: boolean }, got ${shown}`);
}
