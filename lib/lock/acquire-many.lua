-- Acquire locks and draw their fencing tokens, for the locks one process starts in the same tick (a lone acquisition
-- is a batch of one).
-- For each i, KEYS[3i-2] lock key, KEYS[3i-1] its fence counter, KEYS[3i] the services waiting for it (a sorted set,
-- oldest first); per lock 5 ARGV: owner token, ttl ms, the waiting service's id or '' (do not wait), the grant field,
-- and on a quorum node the least token the acquiring client asks for ('' elsewhere). The grant field: '' (a release
-- wakes the service, nothing more), or the service takes the lock straight from a release (release-many.lua):
-- '+' on the wait's first attempt (the wait is granted the lock with this attempt's token and ttl), or 'token ttl' of
-- the wait on a later attempt, which finds the lock held by that token when a release granted it already (its message
-- lost, or on its way) and takes it over.
-- Returns, per lock in order, its new fencing token (>= 1), 0 when another owner holds it, or the error text of that
-- lock alone (redis.pcall: a foreign value under its fence key fails only its own acquisition, never the batch).
-- Busy with a service id: the service joins the waiters as its id, or with a grant field as 'id token ttl' (kept in
-- place when already in: one entry per wait, its expiry set when it joins), so the release hands it the lock or wakes
-- it. Taken by a later attempt of the wait: the entry leaves them. The fencing token is drawn by draw_fence
-- (fence.lua, in front of this file). TIME is read only when a lock of the call needs it (a grant, or a busy lock with
-- a service id): a busy attempt without one, the usual poll, is the SET alone.
local out = {}
for i = 1, #KEYS / 3 do
  local lock, fence_key, waiting = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local a = 5 * (i - 1)
  local token, ttl, service, grant, floor_text = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local floor = tonumber(floor_text)
  local wait = string.match(grant, '^(%S+ %d+) %-$') -- a wait given up: 'token ttl'
  if wait then
    redis.pcall('ZREM', waiting, service .. ' ' .. wait)
    out[i] = redis.pcall('GET', lock) == token and 1 or 0
  else
    local set = redis.pcall('SET', lock, token, 'NX', 'PX', ttl)
    local member, joined = service, false -- joined: the wait's entry went in before this attempt
    if grant ~= '' then
      if grant == '+' then -- the wait's first attempt
        grant = token .. ' ' .. ttl
      else
        joined = true
        if not set and redis.pcall('GET', lock) == string.match(grant, '^%S+') then
          -- a release granted it to this wait already: this attempt takes it over
          set = redis.call('SET', lock, token, 'PX', ttl)
        end
      end
      member = service .. ' ' .. grant
    end
    if type(set) == 'table' and set.err then
      out[i] = set.err
    elseif set then
      local fence, err = draw_fence(fence_key, floor, floor_text)
      if not fence then
        redis.call('DEL', lock) -- no fencing token, no lock
        out[i] = err
      else
        if service ~= '' and (joined or grant == '') then
          redis.pcall('ZREM', waiting, member)
        end
        out[i] = fence
      end
    else
      if service ~= '' then
        if not floor then
          floor = server_clock()
        end
        if redis.pcall('ZADD', waiting, 'NX', floor, member) == 1 then
          -- the set lives as long as its longest wait needs: a later wait with a shorter ttl must not cut it (the
          -- earlier waiters' entries went with the set, and a release granted the later one first)
          if redis.call('PTTL', waiting) < tonumber(ttl) then
            redis.call('PEXPIRE', waiting, ttl)
          end
        end
      end
      out[i] = 0
    end
  end
end
return out
