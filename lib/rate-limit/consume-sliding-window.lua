-- Consumes of one sliding-window policy each: what consume.lua answers for decisions { 'c1', 's:...' }, without its
-- general machinery, as consume-fixed-window.lua is for a fixed window (see there for why). Calls of 16 decisions
-- (pipelined, 1,000 logs): about 9 % less Redis CPU per decision than consume.lua's, 6 % with a busy neighbour beside
-- Redis (docs/rate-limit.md, Guarantees).
-- test/rate-limit/consume-script.spec.ts checks that both answer alike, step by step, one decision and several.
-- The log is written and read by sliding-log.lua's functions and the decisions looped over by decide_each
-- (each-consume.lua), both put in front of this file. A call holds one decision (every call on a cluster) or the
-- decisions of one tick on one server, decided in order at one instant (one TIME).
local max, tonumber, format = math.max, tonumber, string.format
-- parsed policies by their ARGV value: a tick's decisions mostly share one
local SPECS = {}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stamp = format('%.0f', now)

local function decide(log, blocker, spec)
  local p = SPECS[spec]
  if not p then
    local limit, win, cost, block = string.match(spec, '^s:(%d+):(%d+):(%d+):%d+:(%d+)$')
    if not limit then error('malformed sliding-window consume: ' .. tostring(spec)) end
    win = tonumber(win)
    -- members scored at or before `from` have left the window
    p = { tonumber(limit), win, win * 1000, tonumber(cost), tonumber(block), format('%.0f', now - win * 1000) }
    SPECS[spec] = p
  end
  local limit, win_ms, win_us, cost, block = p[1], p[2], p[3], p[4], p[5]
  -- trimmed before it counts, as consume.lua does (so it has written before its ZADD: see there); a foreign type
  -- under the log fails this decision alone
  local trimmed = redis.pcall('ZREMRANGEBYSCORE', log, '-inf', p[6])
  if type(trimmed) == 'table' then return -1, trimmed.err, 0, 0, 0 end
  local blocked = redis.call('PTTL', blocker)
  local count = redis.call('ZCARD', log)
  local allowed = count + cost <= limit
  if allowed and blocked <= 0 then
    if cost > 0 then
      add_to_log(log, stamp, count, cost)
      keep_log(log, win_ms)
    end
    local remaining = limit - count - cost
    if cost > 0 then return 1, 1, remaining > 0 and remaining or 0, win_ms, 0 end
    local reset = leaves_at(log, -1, win_us, now)
    if not reset then return -1, LOG_SCORE_ERROR, 0, 0, 0 end
    return 1, 1, remaining > 0 and remaining or 0, ms(reset), 0
  end
  -- the newest member's score bounds the others': read (and checked, see leaves_at) before anything is written
  local reset = leaves_at(log, -1, win_us, now)
  if not reset then return -1, LOG_SCORE_ERROR, 0, 0, 0 end
  local retry = 0
  if not allowed then
    -- the request fits once (count + cost - limit) of the oldest members have left
    retry = cost > limit and win_us or leaves_at(log, count + cost - limit - 1, win_us, now)
  end
  local remaining = limit - count
  if blocked > 0 then
    -- a blocked log refuses until its block key expires, whatever the count says
    remaining, retry = 0, max(retry, blocked * 1000)
  elseif block > 0 then
    -- blockDuration: refused by its own count, the log is blocked from now
    redis.call('SET', blocker, '1', 'PX', block)
    remaining, retry = 0, max(retry, block * 1000)
  end
  return 0, 0, remaining > 0 and remaining or 0, ms(reset), ms(retry)
end

return decide_each('sliding-window', decide)
