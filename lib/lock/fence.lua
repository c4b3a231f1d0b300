-- Fencing tokens, shared by the lock scripts that draw one (lock.scripts.ts puts this file in front of each).
-- A token is one more than the lock's counter and never less than a clock in µs, so it keeps growing when the
-- counter is lost (evicted under allkeys-*, a restart without persistence or from an older snapshot): the server's
-- (TIME, read once per script call: one instant; needs +time in the ACL), or on a quorum node the floor the client
-- sent (its own clock, the same number to every node, so the granting nodes of one acquisition usually draw the same
-- token and need no second call to raise the lagging ones).
local server_floor, server_floor_text
local function server_clock()
  if not server_floor then
    local now = redis.call('TIME')
    server_floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
    server_floor_text = now[1] .. string.format('%06d', tonumber(now[2]))
  end
  return server_floor, server_floor_text
end

-- The next token of the counter at fence_key, floored by floor (µs; its decimal text floor_text), or by the server's
-- clock when floor is nil. Returns the token, or nil and the error text (a foreign value under the key).
local function draw_fence(fence_key, floor, floor_text)
  if not floor then
    floor, floor_text = server_clock()
  end
  local fence = redis.pcall('INCR', fence_key)
  if type(fence) == 'table' then
    return nil, fence.err
  end
  -- 2^53 on: no longer exact in a double (two acquisitions could get one token; near 2^63 the script's reply turns
  -- negative). Never ours (tokens are µs, ~1.8e15): this acquisition fails rather than hand out a wrong token.
  if fence >= 9007199254740992 then
    return nil, 'ERR the fencing counter is past 2^53: not a token of this library'
  end
  if fence < floor then
    redis.call('SET', fence_key, floor_text)
    fence = floor
  end
  return fence
end
