import { createHmac, randomBytes } from 'node:crypto';
import { FEATURES } from '../common/keys.js';
import { sessionKeyPrefixes } from '../common/traced-scripts.js';

/**
 * Keys the stand-ins: a secret of this process, drawn once, as the rate-limit tracker's (rate-limit.results.ts). A
 * plain hash of an id could be checked by whoever holds a candidate id (a cookie of a custom `genid` that is guessable
 * too); keyed, a stand-in tells nothing outside this process, while within it one id always gets one stand-in.
 */
const STAND_IN_SECRET = randomBytes(32);

/** `sess:{`: a session key (`<prefix>sess:{<id>}`, and its `…}:gone` tombstone) once the prefix is found before it. */
const SESSION_HEAD = `${FEATURES.session}:{`;
/** `sess:user:{`: a user's index of session ids (`<prefix>sess:user:{<userId>}`, and its `…}:new` pending set). */
const INDEX_HEAD = `${FEATURES.sessionUserIndex}:{`;
/** In both heads: one `includes` per argument tells almost every command apart from the sessions'. */
const MARK = `${FEATURES.session}:`;
/** Session ids (SessionService's 43 characters, RedisSessionStore's 16 to 128) are base64url; patterns are not. */
const ID_CHARACTERS = /^[A-Za-z0-9_-]+$/;
/** An index member: a session id (scores, bounds and counts are numbers or `±inf`, never of this length). */
const INDEX_MEMBER = /^[A-Za-z0-9_-]{16,128}$/;

/**
 * The last id and its stand-in: a script call names its session twice (the key and its `:gone` tombstone), and one
 * session's commands come in runs (a read, then its write); an HMAC costs a few microseconds.
 */
let last = { id: '', standIn: '' };

/** `#` and 8 base64url characters of the id's HMAC (STAND_IN_SECRET): what a span writes for a session id. */
export function sessionIdStandIn(id: string): string {
  if (id !== last.id) {
    last = { id, standIn: `#${createHmac('sha256', STAND_IN_SECRET).update(id).digest('base64url').slice(0, 8)}` };
  }
  return last.standIn;
}

/**
 * Whether `text` up to `at` is a registered key prefix (the toolkit's keys start with theirs), or ends with one (a
 * client of the app's own with an ioredis `keyPrefix` given to RedisSessionStore puts its prefix before).
 */
function afterSessionPrefix(text: string, at: number): boolean {
  const prefixes = sessionKeyPrefixes();
  const before = text.slice(0, at);
  if (prefixes.has(before)) return true;
  for (const prefix of prefixes) if (before.endsWith(prefix)) return true;
  return false;
}

/** `text` with the id of each session key in it replaced by its stand-in (`rtk:sess:{#AbC-12_x}:gone`). */
export function withoutSessionKeyIds(text: string): string {
  let head = text.indexOf(SESSION_HEAD);
  if (head < 0) return text;
  let out = '';
  let from = 0;
  while (head >= 0) {
    const open = head + SESSION_HEAD.length;
    const close = text.indexOf('}', open);
    if (close < 0) break;
    const id = text.slice(open, close);
    if (ID_CHARACTERS.test(id) && afterSessionPrefix(text, head)) {
      out += text.slice(from, open) + sessionIdStandIn(id);
      from = close;
    }
    head = text.indexOf(SESSION_HEAD, close);
  }
  return from === 0 ? text : out + text.slice(from);
}

/**
 * A string argument as is, a Buffer one as the text a serializer writes of it when it holds `mark` (a large binary
 * value is searched, not decoded); undefined otherwise.
 */
function textOf(arg: unknown, mark: string): string | undefined {
  if (typeof arg === 'string') return arg;
  return Buffer.isBuffer(arg) && arg.includes(mark) ? arg.toString('utf8') : undefined;
}

function isIndexKey(arg: unknown): boolean {
  const text = textOf(arg, INDEX_HEAD);
  const head = text === undefined ? -1 : text.indexOf(INDEX_HEAD);
  return head >= 0 && afterSessionPrefix(text as string, head);
}

/**
 * `args` with every session id replaced by its stand-in — in a session key, and as a member of a command on a user's
 * index (`ZREM <index> <id>…`) — as strings; the same array when there is none (most commands: no copy).
 */
export function withoutSessionIds<T>(args: T[]): (T | string)[] {
  if (args.length === 0 || sessionKeyPrefixes().size === 0) return args;
  const onIndex = isIndexKey(args[0]);
  let masked: (T | string)[] | undefined;
  for (let i = 0; i < args.length; i++) {
    const member = onIndex && i > 0;
    const text = textOf(args[i], member ? '' : MARK);
    if (text === undefined) continue;
    const next = member && INDEX_MEMBER.test(text) ? sessionIdStandIn(text) : withoutSessionKeyIds(text);
    if (next === text) continue;
    masked ??= [...args];
    masked[i] = next;
  }
  return masked ?? args;
}
