-- Pass a held permit straight to the next holder (a waiter in the same process) instead of releasing it: the permit
-- is never free in between, so a caller of another process cannot slip in, and the waiter does not sleep a retry pause.
-- KEYS[1] holders; ARGV[1] current owner token, ARGV[2] new owner token, ARGV[3] new ttl ms.
-- Returns 1 when handed over, 0 when the current owner no longer held it (expired).
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
