-- All of several locks or none (a multi-resource lock on one server or one quorum node): no partial hold, so two
-- callers with overlapping sets can never deadlock. For each i, KEYS[2i-1] lock key, KEYS[2i] its fence counter;
-- ARGV[1] owner token, ARGV[2] ttl ms, ARGV[3] (a quorum node) the acquiring client's floor. Returns the new fencing
-- token of each lock in order, or {} when any is held.
-- Each token is floored by a clock in µs like acquire-many.lua's: it never goes back when a counter is lost. The
-- server's, or on a quorum node the floor the client sends every node (so the granting nodes draw the same tokens).
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return {}
  end
end
local floor, floorText
if ARGV[3] then
  floorText = ARGV[3]
  floor = tonumber(floorText)
else
  local now = redis.call('TIME')
  floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
  floorText = now[1] .. string.format('%06d', tonumber(now[2]))
end
local out = {}
for i = 1, #KEYS, 2 do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  local fence = redis.call('INCR', KEYS[i + 1])
  if fence < floor then
    redis.call('SET', KEYS[i + 1], floorText)
    fence = floor
  end
  out[#out + 1] = fence
end
return out
