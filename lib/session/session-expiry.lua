-- Shared by the session scripts that give a key its idle expiry (lua-script.ts puts this file in front of each). The
-- caller sends the idle ttl (ms) and the absolute deadline (epoch ms): the ttl is a duration, timed here from Redis's
-- clock, never an epoch from the caller's clock, which may run behind Redis's (an epoch from a clock an hour behind is
-- an hour in Redis's past: the key was deleted by the very write that extended it) or ahead. The deadline caps it,
-- and is judged by Redis's clock too (session.deadline.ts).
-- TIME is read once per script call, however many writes the call makes (scripts replicate their effects on Redis 7,
-- so reading the clock before a write is allowed). Two arguments rather than one '<ttl>:<deadline>' to split, and the
-- expiry handed to PXAT as a string made here (string.format; Redis's own conversion of a Lua number costs more):
-- measured on Redis 7.0.15 (batches of 16 compare-and-sets of a ~450-byte session, INFO commandstats, interleaved
-- passes), Redis CPU per write: median 3.94 µs with the caller's epoch, 4.36 so, 4.6 with one argument split here and
-- a Lua number for PXAT.
local redis_now_ms

-- Redis's clock (epoch ms), read once per script call.
local function redisNowMs()
  if not redis_now_ms then
    local clock = redis.call('TIME')
    redis_now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  end
  return redis_now_ms
end

-- The epoch ms (Redis's clock) at which a key written now with idle ttl `ttl` expires: at most `deadline`; and
-- whether the deadline has come by Redis's clock (TIME >= deadline), when a key written with that expiry would be
-- deleted at once: the session is over, and a write must say so rather than answer the expiry of a key it deleted
-- (the caller's clock, behind Redis's, had not seen the deadline pass). A comparison of numbers in hand: no command.
local function idleExpiry(ttl, deadline)
  local now = redisNowMs()
  local at = now + tonumber(ttl)
  deadline = tonumber(deadline)
  if deadline < at then return deadline, deadline <= now end
  return at, false
end

-- An expiry as PXAT/PEXPIREAT take it: integer digits.
local function epochArg(at)
  return string.format('%d', at)
end
