-- Extend one permit of a semaphore if this owner still holds it (and it has not expired) or, with a new owner, pass
-- it straight to that owner (a waiter in the same process) instead of releasing it: the permit is never free in
-- between, so a caller of another process cannot slip in, and the waiter does not sleep a retry pause.
-- KEYS[1] holders; ARGV[1] owner token, ARGV[2] new ttl ms, ARGV[3] (optional) the new owner's token.
-- Returns 1 when extended (or handed over), 0 when not held.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then
  return 0
end
local ttl = tonumber(ARGV[2])
if ARGV[3] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
else
  redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[1])
end
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
