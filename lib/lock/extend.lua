-- Extend a lock only if it is still held by this owner.
-- KEYS[1] lock key; ARGV[1] owner token, ARGV[2] new ttl ms. Returns 1 when extended, 0 when not held.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
