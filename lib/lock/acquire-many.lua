-- Acquire locks and draw their fencing tokens, for the locks one process starts in the same tick (a lone acquisition
-- is a batch of one).
-- For each i, KEYS[3i-2] lock key, KEYS[3i-1] its fence counter, KEYS[3i] the services waiting for it (a sorted set,
-- oldest first); ARGV[3i-2] owner token, ARGV[3i-1] ttl ms, ARGV[3i] the waiting service's id or '' (do not wait).
-- Returns, per lock in order, its new fencing token (>= 1), 0 when another owner holds it, or the error text of that
-- lock alone (redis.pcall: a foreign value under its fence key fails only its own acquisition, never the batch).
-- Busy with a service id: the service joins the waiters (kept in place when already in), so the release wakes it
-- (release-many.lua). Taken with one: the service leaves them. A token is one more than the counter and never less
-- than a clock in µs, so it keeps growing when the counter is lost (evicted under allkeys-*, a restart without
-- persistence): the server's (TIME, read once: one instant; needs +time in the ACL), or, on a quorum node, the one
-- floor the acquiring client sends as an extra last ARGV (its own clock, the same on every node, so the granting nodes
-- of one acquisition usually draw the same token and need no second call to raise the lagging ones).
local out = {}
local floor, floor_text
if #ARGV > #KEYS then
  floor_text = ARGV[#ARGV]
  floor = tonumber(floor_text)
else
  local now = redis.call('TIME')
  floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
  floor_text = now[1] .. string.format('%06d', tonumber(now[2]))
end
for i = 1, #KEYS / 3 do
  local lock, fence_key, waiting = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local service = ARGV[3 * i]
  local set = redis.pcall('SET', lock, ARGV[3 * i - 2], 'NX', 'PX', ARGV[3 * i - 1])
  if type(set) == 'table' and set.err then
    out[i] = set.err
  elseif set then
    local fence = redis.pcall('INCR', fence_key)
    if type(fence) == 'table' then
      redis.call('DEL', lock) -- no fencing token, no lock
      out[i] = fence.err
    else
      if fence < floor then
        redis.call('SET', fence_key, floor_text)
        fence = floor
      end
      if service ~= '' then
        redis.pcall('ZREM', waiting, service)
      end
      out[i] = fence
    end
  else
    if service ~= '' and not (type(redis.pcall('ZADD', waiting, 'NX', floor, service)) == 'table') then
      redis.call('PEXPIRE', waiting, ARGV[3 * i - 1])
    end
    out[i] = 0
  end
end
return out
