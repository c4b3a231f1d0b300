-- Acquire a lock and draw its fencing token in one step.
-- KEYS[1] lock key, KEYS[2] fence counter (same hash tag); ARGV[1] owner token, ARGV[2] ttl ms.
-- Returns the new fencing token (>= 1), or 0 when another owner holds the lock.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.pcall('INCR', KEYS[2])
  if type(fence) == 'table' and fence.err then
    redis.call('DEL', KEYS[1]) -- no fencing token (a foreign value under the counter), no lock
    return redis.error_reply(fence.err)
  end
  return fence
end
return 0
