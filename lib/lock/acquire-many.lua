-- acquire.lua for several locks at once (the acquisitions one process starts in the same tick, single server only):
-- for each i, KEYS[2i-1] lock key, KEYS[2i] its fence counter, ARGV[2i-1] owner token, ARGV[2i] ttl ms.
-- Returns, per lock in order, its new fencing token (>= 1), 0 when another owner holds it, or the error text of that
-- lock alone (redis.pcall: a foreign value under its fence key fails only its own acquisition, never the batch).
-- Tokens are floored by the server clock in microseconds, as in acquire.lua (TIME is read once: one instant).
local out = {}
local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
local floor_text = now[1] .. string.format('%06d', tonumber(now[2]))
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
      if fence < floor then
        redis.call('SET', KEYS[2 * i], floor_text)
        fence = floor
      end
      out[i] = fence
    end
  else
    out[i] = 0
  end
end
return out
