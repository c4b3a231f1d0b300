-- release.lua for the releases one process makes in the same tick (a lone release is a batch of one), passing each
-- lock released to a waiting service. For each i, KEYS[3i-2] lock key, KEYS[3i-1] its fence counter, KEYS[3i] the
-- services waiting for it (acquire-many.lua); ARGV[1] the wake channel prefix, ARGV[2] the grant channel prefix (a
-- service's channel is the prefix and its id); ARGV[2i+1] owner token, ARGV[2i+2] how many waiting services may be
-- tried (0: nobody, e.g. undoing a partial quorum grant; 1 on a cluster, where PUBLISH counts only the receivers on
-- this node). Returns, per lock in order, 1 when released, 2 when released but every waiting service it popped no
-- longer listened (a quorum then wakes through another node: lock.quorum-wake.ts), 3 when released but Redis refused
-- the PUBLISH of its grant or wake (see below), 0 when not held, or the error text of that lock alone (redis.pcall:
-- one bad key fails only its own release, never the batch). Every answer but 0 and an error text is a release.
-- The oldest waiting service is served: one that waits with a token ('id token ttl') is granted the lock (SET to its
-- token with its ttl, a new fencing token drawn by draw_fence in fence.lua) and told 'fence token lock key' on its
-- grant channel; one without (its id alone) is told 'token lock key' on its wake channel (the released owner token:
-- a quorum's wake may come through two nodes, and the service takes one per release), and the lock is deleted. One
-- that no longer listens (PUBLISH reached nobody) is dropped and the next is tried; when none listens the lock is
-- deleted. A PUBLISH that fails (redis.pcall: an ACL without +publish or without the channel, `ACL SETUSER -publish`
-- at run time; redis.call would abort the script after its writes, which Redis keeps, and fail a release that was
-- made) ends the tries (the next would fail alike): the lock is deleted, a grant undone with it (its service was never
-- told: a lock SET to its token could be held by nobody who knows until the ttl), the popped service left out of the
-- set (its next attempt joins again), and the answer is 3 (the caller reports it). Its waiting services take the lock
-- by their poll; a fencing token drawn for the grant is skipped, so the next holder's is larger still. A wait its
-- service gave up leaves the set (acquire-many.lua); a grant whose service no longer wants it (given up while the
-- grant was on its way) is released by that service; a message lost on the way costs the waiters one poll.
local out = {}
for i = 1, #KEYS / 3 do
  local lock, fence_key, waiting = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local held = redis.pcall('GET', lock)
  if type(held) == 'table' and held.err then
    out[i] = held.err
  elseif held == ARGV[2 * i + 1] then
    local granted, heard, popped, refused = false, false, false, false
    for _ = 1, tonumber(ARGV[2 * i + 2]) do
      local next = redis.pcall('ZPOPMIN', waiting)
      if type(next) ~= 'table' or next.err or #next == 0 then
        break
      end
      popped = true
      local service, token, ttl = string.match(next[1], '^(%S+) (%S+) (%d+)$')
      local sent
      if service then
        local fence = draw_fence(fence_key)
        if not fence then
          break -- no fencing token, no grant: the lock is deleted, the waiters poll (and their attempt reports it)
        end
        -- an entry whose ttl SET refuses (0, or past what Redis takes: never written by us) is dropped alone; the
        -- next one is tried and the tick's other releases go on
        if not redis.pcall('SET', lock, token, 'PX', ttl).err then
          -- the token as digits: `..` writes a Lua number with 14 significant digits, and a token (µs) has 16
          local grant = string.format('%.0f', fence) .. ' ' .. token .. ' ' .. lock
          sent = redis.pcall('PUBLISH', ARGV[2] .. service, grant)
          granted = type(sent) == 'number' and sent > 0
        end
      else
        sent = redis.pcall('PUBLISH', ARGV[1] .. next[1], ARGV[2 * i + 1] .. ' ' .. lock)
        heard = type(sent) == 'number' and sent > 0
      end
      if type(sent) == 'table' then -- refused: the next would be too
        refused = true
        break
      end
      if granted or heard then
        break
      end
    end
    if not granted then
      redis.call('DEL', lock)
    end
    if refused then
      out[i] = 3
    elseif popped and not granted and not heard then
      out[i] = 2
    else
      out[i] = 1
    end
  else
    out[i] = 0
  end
end
return out
