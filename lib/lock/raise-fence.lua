-- Quorum mode: raise this node's fence counter to the token the majority agreed on, while still holding the lock,
-- so the next majority (which overlaps this one) draws a larger token.
-- KEYS[1] lock key, KEYS[2] fence counter; ARGV[1] owner token, ARGV[2] fencing token.
-- Returns 1 when the counter is at least ARGV[2] afterwards, 0 when the lock is no longer held here.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2])
end
return 1
