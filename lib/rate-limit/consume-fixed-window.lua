-- One consume of one fixed-window policy: what consume.lua answers for the decision { 'c1', 'f:...' }, without its
-- general machinery. A call holding one decision pays consume.lua's set-up (its functions and tables are made anew on
-- every call: ~2 µs of Redis CPU) and its general paths (~3 µs more per decision); batched decisions share the
-- set-up, but a call of one decision does not: every decision on a Redis Cluster (each is its own call there) and a
-- lone decision of a tick on one server. Measured (INFO commandstats, Redis 7.0, pipelined calls): 4.8-5.8 µs per
-- call here against 8.0-10.5 µs for consume.lua with the same decision. test/rate-limit/consume-script.spec.ts
-- checks that both answer alike, step by step.
-- KEYS[1] the counter, KEYS[2] its block key (same hash tag). ARGV as for consume.lua: 'c1', then the policy
-- 'f:<limit>:<window ms>:<cost>:<burst>:<block ms>'.
-- Returns allAllowed, allowed, remaining, resetMs, retryAfterMs; a failed decision (an error reply under its keys, a
-- counter that is not a number): -1, the error text, 0, 0, 0.
local limit, win, cost, block = string.match(ARGV[2], '^f:(%d+):(%d+):(%d+):%d+:(%d+)$')
if ARGV[1] ~= 'c1' or not limit then
  error('malformed fixed-window consume: ' .. tostring(ARGV[1]) .. ' ' .. tostring(ARGV[2]))
end
limit, win, cost, block = tonumber(limit), tonumber(win), tonumber(cost), tonumber(block)

-- the counter and the block key in one MGET; a counter MGET reads as nil is confirmed missing (EXISTS 0), else it
-- holds a foreign type
local v = redis.call('MGET', KEYS[1], KEYS[2])
local count = v[1]
if not count then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return { -1, 'WRONGTYPE Operation against a key holding the wrong kind of value', 0, 0, 0 }
  end
  count = 0
else
  count = tonumber(count)
  if not count then return { -1, 'ERR the rate-limit counter holds a value that is not a number', 0, 0, 0 } end
end
-- ms left in the window (0: no window open; a counter without an expiry, never ours, opens a new one)
local left = 0
if count > 0 then
  left = redis.call('PTTL', KEYS[1])
  if left < 0 then
    count, left = 0, 0
  end
end
local after = count == 0 and win or left
if v[2] then
  -- a blocked counter refuses until its block key expires, whatever the count says
  local blocked = redis.call('PTTL', KEYS[2])
  if blocked > 0 then
    local retry = count + cost <= limit and 0 or after
    return { 0, 0, 0, left, math.max(retry, blocked) }
  end
end
if count + cost <= limit then
  if cost > 0 then
    if count == 0 then
      redis.call('SET', KEYS[1], cost, 'PX', win)
    else
      redis.call('INCRBY', KEYS[1], cost)
    end
  end
  local remaining = limit - count - cost
  return { 1, 1, remaining > 0 and remaining or 0, after, 0 }
end
local remaining, retry = limit - count, after
if block > 0 then
  -- blockDuration: refused by its own count, the counter is blocked from now
  redis.call('SET', KEYS[2], '1', 'PX', block)
  remaining, retry = 0, math.max(retry, block)
end
return { 0, 0, remaining > 0 and remaining or 0, left, retry }
