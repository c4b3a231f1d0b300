-- Consumes of one fixed-window policy each: what consume.lua answers for decisions { 'c1', 'f:...' }, without its
-- general machinery. consume.lua pays a set-up on every call (its functions and tables are made anew: ~2 µs of Redis
-- CPU) and its general paths (~3 µs more per decision). Measured (INFO commandstats, Redis 7.0, pipelined calls):
-- 4.8-5.8 µs per call of one decision here against 8.0-10.5 µs for consume.lua. Calls of 16 decisions (50 callers, one
-- server): 11-19 % less Redis CPU per decision than consume.lua's (docs/rate-limit.md, Guarantees).
-- test/rate-limit/consume-script.spec.ts checks that both answer alike, step by step, one decision and several.
-- The counter is read by read_string_counter (read-counter.lua) and the decisions looped over by decide_each
-- (each-consume.lua: the keys, values and answers per decision), both put in front of this file. The policy is
-- 'f:<limit>:<window ms>:<cost>:<burst>:<block ms>'. A call holds one decision (every call on a cluster) or the
-- decisions of one tick on one server, decided in order.
local max, tonumber = math.max, tonumber
-- parsed policies by their ARGV value: a tick's decisions mostly share one
local SPECS = {}

local function decide(counter, blocker, spec)
  local p = SPECS[spec]
  if not p then
    local limit, win, cost, block = string.match(spec, '^f:(%d+):(%d+):(%d+):%d+:(%d+)$')
    if not limit then error('malformed fixed-window consume: ' .. tostring(spec)) end
    p = { tonumber(limit), tonumber(win), tonumber(cost), tonumber(block) }
    SPECS[spec] = p
  end
  local limit, win, cost, block = p[1], p[2], p[3], p[4]
  local count, blocked = read_string_counter(counter, blocker)
  if not count then return -1, blocked, 0, 0, 0 end
  -- ms left in the window (0: no window open; a counter without an expiry, never ours, opens a new one)
  local left = 0
  if count > 0 then
    left = redis.call('PTTL', counter)
    if left < 0 then
      count, left = 0, 0
    end
  end
  local after = count == 0 and win or left
  if blocked > 0 then
    -- a blocked counter refuses until its block key expires, whatever the count says
    local retry = count + cost <= limit and 0 or after
    return 0, 0, 0, left, max(retry, blocked)
  end
  if count + cost <= limit then
    if cost > 0 then
      if count == 0 then
        redis.call('SET', counter, cost, 'PX', win)
      else
        -- a count Lua reads as a number but Redis cannot add to ('1.5', '1e2': never written by us) fails this
        -- decision alone, as consume.lua's pcall does, not the call's other decisions; nothing is written for it
        local added = redis.pcall('INCRBY', counter, cost)
        if type(added) == 'table' then return -1, added.err, 0, 0, 0 end
      end
    end
    local remaining = limit - count - cost
    return 1, 1, remaining > 0 and remaining or 0, after, 0
  end
  local remaining, retry = limit - count, after
  if block > 0 then
    -- blockDuration: refused by its own count, the counter is blocked from now
    redis.call('SET', blocker, '1', 'PX', block)
    remaining, retry = 0, max(retry, block)
  end
  return 0, 0, remaining > 0 and remaining or 0, left, retry
end

return decide_each('fixed-window', decide)
