-- Take permits of a counting semaphore for the callers of one event-loop turn (a lone caller is a batch of one):
-- redis-semaphore's Semaphore, a sorted set of holders scored by expiry. Expired holders are pruned first, so a holder
-- that died frees its permit after its ttl. Times are the server's (TIME), so clients with skewed clocks agree on who
-- expired. KEYS[1] holders; for each caller i, ARGV[2i-1] owner token, ARGV[2i] ttl ms; the last ARGV the limit.
-- Returns, per caller in order, 1 when taken, 0 when all are held. One prune, count and ZADD for the whole batch.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local free = tonumber(ARGV[#ARGV]) - redis.call('ZCARD', KEYS[1])
local out, added, longest = {}, {}, 0
for i = 1, (#ARGV - 1) / 2 do
  if free > 0 then
    local ttl = tonumber(ARGV[2 * i])
    added[#added + 1] = now + ttl
    added[#added + 1] = ARGV[2 * i - 1]
    if ttl > longest then
      longest = ttl
    end
    free = free - 1
    out[i] = 1
  else
    out[i] = 0
  end
end
if #added > 0 then
  redis.call('ZADD', KEYS[1], unpack(added))
  -- The set lives as long as its longest holder (PTTL is -1 on a new key).
  -- A refused expiry (a ttl that is not a whole number: never sent by the library) fails the batch and takes back
  -- its permits, so none stays held without a caller.
  if redis.call('PTTL', KEYS[1]) < longest then
    local set = redis.pcall('PEXPIRE', KEYS[1], longest)
    if type(set) == 'table' and set.err then
      for i = 2, #added, 2 do
        redis.call('ZREM', KEYS[1], added[i])
      end
      return set
    end
  end
end
return out
