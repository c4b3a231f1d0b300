-- A random sample of up to ARGV[1] ids of a user's index, for pruning, without the ids still pending (added, their
-- session perhaps not written yet: see session-index-add.lua). An id absent from the pending set already had its
-- session written, so a missing session key then really means a dead session.
-- KEYS[1] user index, KEYS[2] pending set. ARGV[1] sample size.
local sample = redis.call('ZRANDMEMBER', KEYS[1], ARGV[1])
local out = {}
for _, id in ipairs(sample) do
  if not redis.call('ZSCORE', KEYS[2], id) then out[#out + 1] = id end
end
return out
