-- acquire.lua for several locks at once (the acquisitions one process starts in the same tick, single server only):
-- for each i, KEYS[2i-1] lock key, KEYS[2i] its fence counter, ARGV[2i-1] owner token, ARGV[2i] ttl ms.
-- Returns, per lock in order, its new fencing token (>= 1), or 0 when another owner holds it.
local out = {}
for i = 1, #KEYS / 2 do
  if redis.call('SET', KEYS[2 * i - 1], ARGV[2 * i - 1], 'NX', 'PX', ARGV[2 * i]) then
    out[i] = redis.call('INCR', KEYS[2 * i])
  else
    out[i] = 0
  end
end
return out
