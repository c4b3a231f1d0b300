-- Put in front of consume.lua, consume-sliding-window.lua and reward.lua (LuaScript.fromFile preludes): the writes and
-- reads of a sliding-window log, a sorted set with one member per admitted unit, scored by its time in microseconds.

-- Adds `cost` members scored `stamp` (now, µs, a whole-number string) to a log that holds `count` members in its
-- window. Each member is unique: the count only grows between calls that see the same microsecond. At most 500
-- members per ZADD (a cost may be up to the log's limit; one ZADD of them all could overflow Lua's stack).
local function add_to_log(key, stamp, count, cost)
  if cost == 1 then
    redis.call('ZADD', key, stamp, stamp .. ':' .. (count + 1))
    return
  end
  local j = 1
  while j <= cost do
    local args = {}
    local last = math.min(cost, j + 499)
    for m = j, last do
      args[#args + 1] = stamp
      args[#args + 1] = stamp .. ':' .. (count + m)
    end
    redis.call('ZADD', key, unpack(args))
    j = last + 1
  end
end

-- A log must outlive its newest member by a window. A PEXPIRE on every add is a write that Redis 7 rewrites to
-- PEXPIREAT for propagation (about 1.5 µs of Redis CPU per decision); instead the TTL is set to two windows whenever a
-- window or less is left, so most adds pay a PTTL (a read) and the key still outlives each of its members by more
-- than a window (it expires one to two windows after the newest).
local function keep_log(key, win_ms)
  if redis.call('PTTL', key) <= win_ms then redis.call('PEXPIRE', key, 2 * win_ms + 1) end
end

-- µs from `now_us` until the member at `rank` (0 the oldest, -1 the newest) leaves a window of `win_us`; 0 when there
-- is none. Read by rank, O(log N): reaching it with ZRANGEBYSCORE ... LIMIT would walk the members before it (1 ms
-- per call at 200k members).
-- nil for a member scored +inf or at or past 2^63 µs (a foreign ZADD; 'nan' Redis refuses): it never leaves, and its
-- time read as a Redis integer was -9223372036854775808 (resetMs, retryAfterMs) until 2026-12-03. The caller fails
-- the decision with LOG_SCORE_ERROR before it writes (never a pcall per decision: one comparison on the score read).
-- A member scored -inf or at or past -2^63 left the window long ago: a consume trims it, a peek never counts or reads
-- it (it precedes the window's members). The newest member's score bounds every other, so a decision that reads it
-- (refused, a peek, a cost of 0) finds any such member; an admitted consume reads no score and counts it as a unit.
local LOG_SCORE_ERROR = 'ERR the rate-limit sliding-window log holds a member scored +inf or past 2^63 µs'
local LOG_SCORE_BOUND = 2 ^ 63
local function leaves_at(key, rank, win_us, now_us)
  local score = redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')[2]
  if not score then return 0 end
  score = tonumber(score)
  if score < LOG_SCORE_BOUND then return score + win_us - now_us end
  return nil
end
