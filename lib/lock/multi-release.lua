-- Release every lock of a multi-resource lock that this owner still holds.
-- KEYS lock keys; ARGV[1] owner token. Returns 1 when all were held, 0 when any had expired (the rest are released).
local all = 1
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
  else
    all = 0
  end
end
return all
