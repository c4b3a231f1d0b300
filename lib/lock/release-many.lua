-- release.lua for several locks at once (the releases one process makes in the same tick, single server only):
-- for each i, KEYS[i] lock key, ARGV[i] owner token. Returns, per lock in order, 1 when released, 0 when not held.
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    out[i] = redis.call('DEL', KEYS[i])
  else
    out[i] = 0
  end
end
return out
