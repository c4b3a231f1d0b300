-- Maintains a user's index (a sorted set of session ids scored by each session's absolute deadline) and its pending
-- set (ids added in the last ARGV[2] ms, scored by when), both in the user's hash slot.
-- A session id enters the index BEFORE its session is written, so destroyAllForUser, which reads the index, sees
-- every session that exists. Until that write happens the id looks dead (no session key): the pending set keeps
-- pruning from removing it.
-- KEYS[1] user index, KEYS[2] pending set. ARGV[1] the caller's now (epoch ms; unused: Redis's clock judges the
-- deadlines, as it does a session's, so an instance whose clock runs ahead prunes no live session), ARGV[2] pending
-- ms, ARGV[3] id to add ('' for none), ARGV[4] its deadline, ARGV[5..] ids the caller found dead (removed unless
-- pending).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[2])))
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
  redis.call('ZADD', KEYS[2], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
for i = 5, #ARGV do
  if not redis.call('ZSCORE', KEYS[2], ARGV[i]) then redis.call('ZREM', KEYS[1], ARGV[i]) end
end
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', KEYS[1], top[2]) end
return redis.call('ZCARD', KEYS[1])
