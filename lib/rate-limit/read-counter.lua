-- Put in front of consume.lua and consume-fixed-window.lua (LuaScript.fromFile preludes; consume-token-bucket.lua has
-- it written out).
-- A string counter (fixed window: its count; token bucket: its TAT) and its block key, read with one MGET. MGET reads
-- a foreign type as nil, so a counter read as nil is confirmed missing (EXISTS 0) before it counts as empty. Returns
-- the counter as a number (0 when missing), the block key's TTL in ms (0: not blocked) and the counter as stored (nil
-- when missing); for a counter of another type or one that is not a number, nil and the error text: the caller fails
-- that decision alone.
-- Not a number includes what Lua's tonumber (strtod) reads as one but no count or TAT of ours is, nor an integer Redis
-- holds: 'nan', 'inf', '-inf', anything at or past ±2^63 ('1e300'). Until 2026-12-03 a fixed window of 'nan' refused
-- with retryAfterMs 0 until it expired, and a TAT of '-inf' answered resetMs -9223372036854775808.
local COUNTER_BOUND = 2 ^ 63
local function read_string_counter(key, bkey)
  local v = redis.call('MGET', key, bkey)
  local value = v[1]
  if not value then
    if redis.call('EXISTS', key) == 1 then
      return nil, 'WRONGTYPE Operation against a key holding the wrong kind of value'
    end
    value = 0
  else
    value = tonumber(value)
    -- NaN fails both comparisons
    if not (value and value > -COUNTER_BOUND and value < COUNTER_BOUND) then
      return nil, 'ERR the rate-limit counter holds a value that is not a number (or NaN, infinite, past 2^63)'
    end
  end
  return value, v[2] and redis.call('PTTL', bkey) or 0, v[1]
end
