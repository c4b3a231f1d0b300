-- Put in front of consume.lua and consume-sliding-window.lua (LuaScript.fromFile preludes): the writes and reads of a
-- sliding-window log, a sorted set with one member per admitted unit, scored by its time in microseconds.

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
local function leaves_at(key, rank, win_us, now_us)
  local member = redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')
  return member[2] and (tonumber(member[2]) + win_us - now_us) or 0
end
