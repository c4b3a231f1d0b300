-- Take one of ARGV[3] permits of a counting semaphore (redis-semaphore's Semaphore: a sorted set of holders scored by
-- expiry). Expired holders are pruned first, so a holder that died frees its permit after its ttl. Times are the
-- server's (TIME), so clients with skewed clocks agree on who expired.
-- KEYS[1] holders; ARGV[1] owner token, ARGV[2] ttl ms, ARGV[3] limit. Returns 1 when taken, 0 when all are held.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
-- The set lives as long as its longest holder (PTTL is -1 on a new key).
local pttl = redis.call('PTTL', KEYS[1])
if pttl < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
