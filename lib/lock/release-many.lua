-- release.lua for several locks at once (the releases one process makes in the same tick, single server only):
-- for each i, KEYS[i] lock key, ARGV[i] owner token. Returns, per lock in order, 1 when released, 0 when not held, or
-- the error text of that lock alone (redis.pcall: one bad key fails only its own release, never the batch).
local out = {}
for i = 1, #KEYS do
  local held = redis.pcall('GET', KEYS[i])
  if type(held) == 'table' and held.err then
    out[i] = held.err
  elseif held == ARGV[i] then
    out[i] = redis.call('DEL', KEYS[i])
  else
    out[i] = 0
  end
end
return out
