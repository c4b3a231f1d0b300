-- Adds one cache entry to a tag index and keeps the index bounded.
-- KEYS[1] tag index (sorted set: member = entry key, score = the entry's stale horizon in epoch ms)
-- KEYS[2] the tag's invalidation mark (epoch ms of its last invalidation; same hash tag as KEYS[1])
-- ARGV[1] now (ms; like every time here, Redis's clock as the caller estimates it: cache.clock.ts)
-- ARGV[2] entry key  ARGV[3] entry's stale horizon (ms)  ARGV[4] when the value was read/loaded (ms)
-- Returns 0 without adding when the tag was invalidated after the value was loaded: the caller must not store a value
-- that the invalidation was meant to remove. Members whose entries have expired are pruned on every write, and the
-- index itself expires with its last entry, so tag indexes clean themselves without a GC job.
local mark = redis.call('GET', KEYS[2])
if mark and tonumber(mark) > tonumber(ARGV[4]) then return 0 end
local now = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(last[2])) + 1000)
end
return 1
