-- Hand a held lock straight to the next owner (a waiter in the same process) instead of releasing it: the lock is
-- never free in between, and the new owner gets a new token and a new fencing token.
-- KEYS[1] lock key, KEYS[2] fence counter; ARGV[1] current owner token, ARGV[2] new owner token, ARGV[3] new ttl ms.
-- Returns the new fencing token, or 0 when the current owner no longer holds the lock.
-- The token is floored by the server clock in microseconds, as in acquire-many.lua.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local now = redis.call('TIME')
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
local fence = redis.call('INCR', KEYS[2])
local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
if fence < floor then
  redis.call('SET', KEYS[2], now[1] .. string.format('%06d', tonumber(now[2])))
  fence = floor
end
return fence
