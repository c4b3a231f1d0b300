-- release.lua for the releases one process makes in the same tick (a lone release is a batch of one), waking a waiting
-- service per lock released. For each i, KEYS[2i-1] lock key, KEYS[2i] the services waiting for it (acquire-many.lua);
-- ARGV[1] the wake channel prefix (a service's channel is the prefix and its id); ARGV[2i] owner token, ARGV[2i+1] how
-- many waiting services may be tried (0: wake nobody, e.g. undoing a partial quorum grant; 1 on a cluster, where
-- PUBLISH counts only the receivers on this node). Returns, per lock in order, 1 when released, 0 when not held, or
-- the error text of that lock alone (redis.pcall: one bad key fails only its own release, never the batch).
-- The oldest waiting service is told the lock key; one that no longer listens (PUBLISH reached nobody) is dropped and
-- the next is tried. A wake lost on the way (or sent to a service that stopped waiting) costs the waiters one poll.
local out = {}
for i = 1, #KEYS / 2 do
  local lock = KEYS[2 * i - 1]
  local held = redis.pcall('GET', lock)
  if type(held) == 'table' and held.err then
    out[i] = held.err
  elseif held == ARGV[2 * i] then
    out[i] = redis.call('DEL', lock)
    for _ = 1, tonumber(ARGV[2 * i + 1]) do
      local next = redis.pcall('ZPOPMIN', KEYS[2 * i])
      if type(next) ~= 'table' or next.err or #next == 0 then
        break
      end
      if redis.call('PUBLISH', ARGV[1] .. next[1], lock) > 0 then
        break
      end
    end
  else
    out[i] = 0
  end
end
return out
