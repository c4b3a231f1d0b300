-- Adds a session id to a user's index (a sorted set scored by the session's absolute deadline), drops ids whose
-- deadline has passed and the ids the caller found dead, and keeps the index alive as long as its last session.
-- KEYS[1] user index. ARGV[1] now (epoch ms), ARGV[2] id, ARGV[3] deadline, ARGV[4..] dead ids.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
for i = 4, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
end
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', KEYS[1], top[2]) end
return redis.call('ZCARD', KEYS[1])
