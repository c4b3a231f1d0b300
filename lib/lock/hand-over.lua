-- Hand a held lock straight to the next owner (a waiter in the same process) instead of releasing it: the lock is
-- never free in between, and the new owner gets a new token and a new fencing token.
-- KEYS[1] lock key, KEYS[2] fence counter; ARGV[1] current owner token, ARGV[2] new owner token, ARGV[3] new ttl ms.
-- Returns the new fencing token (draw_fence, fence.lua in front of this file), or 0 when the current owner no longer
-- holds the lock. No token (a foreign value under the counter): an error, and the lock stays the current owner's.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local fence, err = draw_fence(KEYS[2])
if not fence then
  return redis.error_reply(err)
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return fence
