-- Acquire a lock and draw its fencing token in one step.
-- KEYS[1] lock key, KEYS[2] fence counter (same hash tag); ARGV[1] owner token, ARGV[2] ttl ms.
-- Returns the new fencing token, or 0 when another owner holds the lock.
-- The token is one more than the counter and never less than the server clock in microseconds (TIME), so it keeps
-- growing when the counter is lost (evicted under allkeys-*, a restart without persistence). Needs +time in the ACL.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.pcall('INCR', KEYS[2])
  local now = redis.pcall('TIME')
  local err = (type(fence) == 'table' and fence.err) or now.err
  if err then
    redis.call('DEL', KEYS[1]) -- no fencing token (a foreign value under the counter, TIME denied), no lock
    return redis.error_reply(err)
  end
  local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
  if fence < floor then
    redis.call('SET', KEYS[2], now[1] .. string.format('%06d', tonumber(now[2])))
    fence = floor
  end
  return fence
end
return 0
