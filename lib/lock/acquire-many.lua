-- acquire.lua for several locks at once (the acquisitions one process starts in the same tick, single server only):
-- for each i, KEYS[2i-1] lock key, KEYS[2i] its fence counter, ARGV[2i-1] owner token, ARGV[2i] ttl ms.
-- Returns, per lock in order, its new fencing token (>= 1), 0 when another owner holds it, or the error text of that
-- lock alone (redis.pcall: a foreign value under its fence key fails only its own acquisition, never the batch).
local out = {}
for i = 1, #KEYS / 2 do
  local set = redis.pcall('SET', KEYS[2 * i - 1], ARGV[2 * i - 1], 'NX', 'PX', ARGV[2 * i])
  if type(set) == 'table' and set.err then
    out[i] = set.err
  elseif set then
    local fence = redis.pcall('INCR', KEYS[2 * i])
    if type(fence) == 'table' then
      redis.call('DEL', KEYS[2 * i - 1]) -- no fencing token, no lock
      out[i] = fence.err
    else
      out[i] = fence
    end
  else
    out[i] = 0
  end
end
return out
