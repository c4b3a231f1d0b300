-- One consume of one token-bucket policy: what consume.lua answers for the decision { 'c1', 't:...' }, without its
-- general machinery, as consume-fixed-window.lua is for a fixed window (see there: a call holding one decision pays
-- consume.lua's set-up and general paths; every decision on a Redis Cluster and a lone decision of a tick on one
-- server is such a call). test/rate-limit/consume-script.spec.ts checks that both answer alike, step by step.
-- KEYS[1] the bucket (its TAT), KEYS[2] its block key (same hash tag). ARGV as for consume.lua: 'c1', then the policy
-- 't:<limit>:<window ms>:<cost>:<burst>:<block ms>'.
-- Returns allAllowed, allowed, remaining, resetMs, retryAfterMs; a failed decision (an error reply under its keys, a
-- counter that is not a number): -1, the error text, 0, 0, 0.
-- The algorithm is consume.lua's token bucket (GCRA) step for step; its comments there say why each step is so.
local limit, win, cost, burst, block = string.match(ARGV[2], '^t:(%d+):(%d+):(%d+):(%d+):(%d+)$')
if ARGV[1] ~= 'c1' or not limit then
  error('malformed token-bucket consume: ' .. tostring(ARGV[1]) .. ' ' .. tostring(ARGV[2]))
end
limit, win, cost, burst, block = tonumber(limit), tonumber(win), tonumber(cost), tonumber(burst), tonumber(block)
local floor, ceil = math.floor, math.ceil
local win_us = win * 1000
-- µs per token, whole (consume.lua's spec_of says why)
local interval = math.max(1, floor(win_us / limit + 0.5))
local capacity = burst * interval

local v = redis.call('MGET', KEYS[1], KEYS[2])
local tat = v[1]
if not tat then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return { -1, 'WRONGTYPE Operation against a key holding the wrong kind of value', 0, 0, 0 }
  end
  tat = 0
else
  tat = tonumber(tat)
  if not tat then return { -1, 'ERR the rate-limit counter holds a value that is not a number', 0, 0, 0 } end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- stored negative by consume.lua or this script: its expiry is known (see the charge below)
local stored = tat < 0 and -tat or false
if tat < 0 then tat = -tat end
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - capacity
local allowed = now + 0.5 >= allow_at
local retry = 0
if not allowed then retry = cost > burst and win_us or allow_at - now end
local remaining = floor((capacity - (tat - now)) / interval + 1e-9)
local reset = tat - now

-- a reply's ms figure from µs
local function ms(us)
  return us > 0 and ceil(us / 1000) or 0
end

if v[2] then
  -- a blocked bucket refuses until its block key expires, whatever the bucket says
  local blocked = redis.call('PTTL', KEYS[2])
  if blocked > 0 then
    if allowed then retry = 0 end
    return { 0, 0, 0, ms(reset), ms(math.max(retry, blocked * 1000)) }
  end
end
if allowed then
  if cost > 0 then
    local new_cell = floor(new_tat / win_us)
    if stored and floor(stored / win_us) == new_cell then
      redis.call('INCRBY', KEYS[1], stored - new_tat)
    else
      redis.call('SET', KEYS[1], string.format('%.17g', -new_tat), 'PX', ceil(((new_cell + 2) * win_us - now) / 1000))
    end
  end
  remaining = floor((capacity - (new_tat - now)) / interval + 1e-9)
  return { 1, 1, remaining > 0 and remaining or 0, ms(new_tat - now), 0 }
end
if block > 0 then
  -- blockDuration: refused by its own count, the bucket is blocked from now
  redis.call('SET', KEYS[2], '1', 'PX', block)
  remaining, retry = 0, math.max(retry, block * 1000)
end
return { 0, 0, remaining > 0 and remaining or 0, ms(reset), ms(retry) }
