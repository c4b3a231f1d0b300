-- Release a lock only if it is still held by this owner (the lock feature's locks and the cache's stampede lock).
-- KEYS[1] lock key; ARGV[1] owner token. Returns 1 when released, 0 when not held (expired or taken over).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
