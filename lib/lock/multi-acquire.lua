-- All of several locks or none (a multi-resource lock on one server or one quorum node): no partial hold, so two
-- callers with overlapping sets can never deadlock. For each i, KEYS[2i-1] lock key, KEYS[2i] its fence counter;
-- ARGV[1] owner token, ARGV[2] ttl ms, ARGV[3] (a quorum node) the acquiring client's floor. Returns the new fencing
-- token of each lock in order, or {} when any is held.
-- Each token is drawn by draw_fence (fence.lua, in front of this file): floored by the server's clock, or on a quorum
-- node by the floor the client sends every node (so the granting nodes draw the same tokens). A counter holding a
-- foreign value: an error, and none of the locks is left held.
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return {}
  end
end
local floor = tonumber(ARGV[3])
local out = {}
for i = 1, #KEYS, 2 do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  local fence, err = draw_fence(KEYS[i + 1], floor, ARGV[3])
  if not fence then
    for j = 1, i, 2 do
      redis.call('DEL', KEYS[j])
    end
    return redis.error_reply(err)
  end
  out[#out + 1] = fence
end
return out
