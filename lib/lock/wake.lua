-- A quorum release's wake sent by another node than the one that was to wake (lock.quorum-wake.ts): that node's
-- release did not answer, found the lock not held, every waiting service it popped no longer listened there, or Redis
-- refused its PUBLISH there. Unless the lock is held again here (its waiters then wait for that holder's release),
-- pops the oldest waiting service and tells it 'token lock key' on its wake channel (release-many.lua's message: the
-- service takes one per release), trying the next while nobody listens.
-- KEYS[1] lock key, KEYS[2] the services waiting for it; ARGV[1] the wake channel prefix, ARGV[2] the released owner
-- token, ARGV[3] how many waiting services may be tried. Returns 1 when one listened, 3 when Redis refused the PUBLISH
-- (redis.pcall: an ACL without +publish or without the channel; the popped service is left out of the set, its next
-- attempt joins again, and no other is tried: it would be refused alike), else 0.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
for _ = 1, tonumber(ARGV[3]) do
  local next = redis.call('ZPOPMIN', KEYS[2])
  if #next == 0 then
    return 0
  end
  local sent = redis.pcall('PUBLISH', ARGV[1] .. next[1], ARGV[2] .. ' ' .. KEYS[1])
  if type(sent) == 'table' then
    return 3
  end
  if sent > 0 then
    return 1
  end
end
return 0
