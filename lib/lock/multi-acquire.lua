-- All of several locks or none (a multi-resource lock on one server or one quorum node): no partial hold, so two
-- callers with overlapping sets can never deadlock. For each i, KEYS[2i-1] lock key, KEYS[2i] its fence counter;
-- ARGV[1] owner token, ARGV[2] ttl ms. Returns the new fencing token of each lock in order, or {} when any is held.
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return {}
  end
end
local out = {}
for i = 1, #KEYS, 2 do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  out[#out + 1] = redis.call('INCR', KEYS[i + 1])
end
return out
