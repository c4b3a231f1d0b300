-- Extend every lock of a multi-resource lock, only if this owner still holds all of them.
-- KEYS lock keys; ARGV[1] owner token, ARGV[2] new ttl ms. Returns 1 when extended, 0 when any is not held (none
-- extended then).
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then
    return 0
  end
end
for i = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 1
