-- Give back one permit of a semaphore. KEYS[1] holders; ARGV[1] owner token.
-- Returns 1 when released, 0 when this owner no longer held it (expired: its permit may already be someone else's).
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(score) <= now then
  return 0
end
return 1
