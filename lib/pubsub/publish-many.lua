-- The publishes one process makes in one turn of its event loop, in order (single server only): PUBLISH ARGV[2i-1]
-- ARGV[2i] for each i. No keys. Returns, per message, how many subscribers received it.
local out = {}
for i = 1, #ARGV / 2 do
  out[i] = redis.call('PUBLISH', ARGV[2 * i - 1], ARGV[2 * i])
end
return out
