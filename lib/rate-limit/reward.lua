-- Gives back (reward) or takes (penalty) units of one rate-limit counter, as rate-limiter-flexible's reward/penalty
-- and the guard's skipSuccessfulRequests / skipFailedRequests refunds do. Time comes from the Redis server.
--
-- KEYS[1]  the counter
-- ARGV     algorithm ('s', 'f', 't'), limit, window ms, points (> 0 reward: give back; < 0 penalty: charge), burst
--          (token bucket: the tokens the bucket holds); a reward of a fixed window may add the ms its charge's window
--          had left when the reward was sent, by the caller's clock (RewardOptions.windowEndsAt)
-- Returns  the units left after the change (never below 0)
local key = KEYS[1]
local algo = ARGV[1]
local limit = tonumber(ARGV[2])
local win_ms = tonumber(ARGV[3])
local points = tonumber(ARGV[4])
local fmt = string.format
-- a TAT at or past 2^63 µs is no integer Redis holds (consume.lua's charge says more)
local TAT_TOO_FAR = 'ERR rate-limit token bucket: its TAT would pass 2^63 µs (burst × ttl / limit is too long)'
-- A count or TAT as read-counter.lua reads it for a consume (0 when missing): one that is not a number, or that
-- tonumber reads as NaN, ±inf or past ±2^63 ('nan', '1e300': never ours), fails the call before it writes (the reply
-- error of a consume of it). A foreign type fails at the GET (WRONGTYPE).
local function stored_number()
  local v = redis.call('GET', key)
  if not v then return 0 end
  v = tonumber(v)
  if not (v and v > -2 ^ 63 and v < 2 ^ 63) then return nil end -- NaN fails both comparisons
  return v
end
local NOT_A_NUMBER = 'ERR the rate-limit counter holds a value that is not a number (or NaN, infinite, past 2^63)'
if algo == 'f' then
  local count = stored_number()
  if not count then return redis.error_reply(NOT_A_NUMBER) end
  if points > 0 then
    if count == 0 then return limit end
    -- A window opens with the first charge after the one before it ended, so a later window ends at least a whole
    -- window after the charged one; the charged one ends within the two calls' transit of what the caller says. Past
    -- half a window later, the counter holds a later window's charges: a refund taken from them freed a unit of its
    -- limit (until 2026-12-06). A counter without an expiry (-1, never ours) is taken as the charged window.
    local charged_left = tonumber(ARGV[6])
    if charged_left and 2 * redis.call('PTTL', key) > 2 * charged_left + win_ms then
      return math.max(0, limit - count)
    end
    local left = math.max(0, count - points)
    -- in digits: a count of 1e17 or more (never ours) would go in e-notation, which INCRBY refuses
    redis.call('SET', key, fmt('%.0f', left), 'KEEPTTL')
    return math.max(0, limit - left) -- a counter charged past its limit (penalty) is still over it
  end
  if count == 0 then
    redis.call('SET', key, -points, 'PX', win_ms)
    return math.max(0, limit + points)
  end
  return math.max(0, limit - redis.call('INCRBY', key, -points))
end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
if algo == 's' then
  -- a member scored +inf or past 2^63 µs (a foreign ZADD: never ours) fails the call before it writes, as a consume
  -- that reads it fails (sliding-log.lua's leaves_at); until 2026-12-03 a reward popped it, a penalty added beside it
  if not leaves_at(key, -1, 0, 0) then return redis.error_reply(LOG_SCORE_ERROR) end
  local from = string.format('%.0f', now_us - win_ms * 1000)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', from)
  if points > 0 then
    redis.call('ZPOPMAX', key, points) -- the newest units: the ones this request was charged
    return math.max(0, limit - redis.call('ZCARD', key))
  end
  -- A full log refuses everything a consume can ask (a cost is at most the limit): a penalty adds what fills it to its
  -- limit, no more. Until 2026-12-03 each penalty added min(points, limit) whatever the log held (20 penalties of 100
  -- at limit 100: 2,000 members). Added as a consume adds them (sliding-log.lua's add_to_log, put in front of this
  -- script: at most 500 per ZADD, each member unique).
  local n = redis.call('ZCARD', key)
  local add = math.min(-points, limit - n)
  if add <= 0 then return 0 end
  add_to_log(key, fmt('%.0f', now_us), n, add)
  redis.call('PEXPIRE', key, win_ms + 1)
  return math.max(0, limit - redis.call('ZCARD', key))
end
if algo == 't' then
  -- consume.lua's token bucket (its check says why): in units of 1/limit µs a token is the window, so the rate is
  -- exactly `limit` per window, and the TAT is stored whole, rounded up (a reward gives back under 1 µs less than it
  -- says, a penalty takes under 1 µs more). A TAT with a fraction cannot take the consume scripts' INCRBY: until
  -- 2026-12-03 this wrote them (7 per minute: 8,571,428.57 µs per token).
  local win_us = win_ms * 1000
  local burst = tonumber(ARGV[5])
  -- consume.lua stores the TAT negative (its expiry known); written back positive here, so it sets the expiry again
  local tat = stored_number()
  if not tat then return redis.error_reply(NOT_A_NUMBER) end
  tat = math.ceil(math.abs(tat))
  if tat < now_us then tat = now_us end
  local owed = (tat - now_us) * limit - points * win_us
  if owed <= 0 then
    redis.call('DEL', key) -- a full bucket
    return burst
  end
  local ahead = math.ceil(owed / limit) -- µs from now to the new TAT
  -- written in digits ('%.0f'; '%.17g' writes 1e17 and up in e-notation, which a consume's INCRBY refuses); at or
  -- past 2^63 µs it is no integer Redis holds (consume.lua's charge says more)
  if now_us + ahead >= 2 ^ 63 then return redis.error_reply(TAT_TOO_FAR) end
  redis.call('SET', key, fmt('%.0f', now_us + ahead), 'PX', fmt('%.0f', math.ceil(ahead / 1000) + 1))
  return math.max(0, math.floor((burst * win_us - ahead * limit) / win_us))
end
error('unknown rate-limit algorithm ' .. tostring(algo))
