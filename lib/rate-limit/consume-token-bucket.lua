-- Consumes of one token-bucket policy each: what consume.lua answers for decisions { 'c1', 't:...' }, without its
-- general machinery, as consume-fixed-window.lua is for a fixed window (see there for why and what it saves).
-- test/rate-limit/consume-script.spec.ts checks that both answer alike, step by step, one decision and several.
-- The bucket (its TAT) is read by read_string_counter (read-counter.lua) and the decisions looped over by decide_each
-- (each-consume.lua: the keys, values and answers per decision), both put in front of this file. The policy is
-- 't:<limit>:<window ms>:<cost>:<burst>:<block ms>'. A call holds one decision (every call on a cluster) or the
-- decisions of one tick on one server, decided in order at one instant (one TIME).
-- The algorithm is consume.lua's token bucket (GCRA) step for step; its comments there say why each step is so. It is
-- written out in both, not shared as functions of a prelude: tried (2026-12-03), the calls cost a lone decision 3-5 %
-- more Redis time here and 6-8 % more in consume.lua (12-round pairs of old and new on one server, 3 runs; an A/A of
-- the same script put the same pairs at 1.00).
local floor, ceil, max, format, tonumber = math.floor, math.ceil, math.max, string.format, tonumber
-- parsed policies by their ARGV value: a tick's decisions mostly share one
local SPECS = {}
local now -- µs, the server's clock, read once by the first decision that gets past its reads
-- buckets this call charged: the TAT stored and what rounding it up to a whole µs added (consume.lua's check says
-- why); kept only for a call of several decisions (a lone one has no later decision to read them)
local TAT_OF, LOST_OF = false, false
if #KEYS > 2 then TAT_OF, LOST_OF = {}, {} end
-- a TAT at or past 2^63 µs is no integer Redis holds (consume.lua's charge says more)
local TAT_MAX = 2 ^ 63
local TAT_TOO_FAR = 'ERR rate-limit token bucket: its TAT would pass 2^63 µs (burst × ttl / limit is too long)'

local function decide(bucket, blocker, spec)
  local p = SPECS[spec]
  if not p then
    local limit, win, cost, burst, block = string.match(spec, '^t:(%d+):(%d+):(%d+):(%d+):(%d+)$')
    if not limit then error('malformed token-bucket consume: ' .. tostring(spec)) end
    limit, win, cost, burst, block = tonumber(limit), tonumber(win), tonumber(cost), tonumber(burst), tonumber(block)
    local win_us = win * 1000
    -- in units of 1/limit µs: a token is the window, the bucket burst windows (consume.lua's check says why)
    local cap = burst * win_us
    p = { limit, cost, burst, block, win_us, cap, cap < 2 ^ 53 and cap or cap * (1 + 2 ^ -48) }
    SPECS[spec] = p
  end
  local limit, cost, burst, block, win_us, cap = p[1], p[2], p[3], p[4], p[5], p[6]

  local tat, blocked = read_string_counter(bucket, blocker)
  if not tat then return -1, blocked, 0, 0, 0 end
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  -- stored negative by consume.lua or this script: its expiry is known (see the charge below)
  local stored = tat < 0 and -tat or false
  if tat < 0 then tat = -tat end
  -- a TAT with a fraction (reward.lua wrote them before 2026-12-03) cannot take the charge's INCRBY: rounded up (a µs
  -- later, so it never admits more) and the charge SETs it whole
  if tat % 1 ~= 0 then tat, stored = ceil(tat), false end
  if tat < now then tat = now end
  -- owed as stored (each charge rounds its TAT up to a whole µs), exactly for a bucket this call charged
  local base = (tat - now) * limit
  local owed = base
  if TAT_OF and TAT_OF[bucket] == tat then owed = base - LOST_OF[bucket] end
  local step = cost * win_us
  local due = owed + step
  local allowed = due <= p[7]
  local retry = 0
  if not allowed then retry = cost > burst and win_us or (base + step - cap) / limit end
  local remaining = floor((cap - owed) / win_us)
  local reset = tat - now

  if blocked > 0 then
    -- a blocked bucket refuses until its block key expires, whatever the bucket says
    if allowed then retry = 0 end
    return 0, 0, 0, ms(reset), ms(max(retry, blocked * 1000))
  end
  if allowed then
    local ahead = ceil(due / limit) -- µs from now to the TAT after the charge
    local new_tat = now + ahead
    if cost > 0 then
      if new_tat >= TAT_MAX then return -1, TAT_TOO_FAR, 0, 0, 0 end
      local new_cell = floor(new_tat / win_us)
      -- a write Redis refuses fails this decision alone, as consume.lua's pcall does; nothing is written for it
      local wrote
      if stored and floor(stored / win_us) == new_cell then
        -- refused for a TAT Redis cannot add to (one in e-notation, '-1.79643e+15': never written by us); the
        -- difference is under a window (< 1e17: Redis writes it in digits)
        wrote = redis.pcall('INCRBY', bucket, stored - new_tat)
      else
        -- written with '%.0f': '%.17g' (and Redis, for a number) writes 1e17 and up in e-notation, which INCRBY refuses
        wrote = redis.pcall('SET', bucket, format('%.0f', -new_tat), 'PX',
          format('%.0f', ceil(((new_cell + 2) * win_us - now) / 1000)))
      end
      if type(wrote) == 'table' and wrote.err then return -1, wrote.err, 0, 0, 0 end -- SET's OK is a table too
      if TAT_OF then TAT_OF[bucket], LOST_OF[bucket] = new_tat, ahead * limit - due end
    end
    remaining = floor((cap - due) / win_us)
    return 1, 1, remaining > 0 and remaining or 0, ms(ahead), 0
  end
  if block > 0 then
    -- blockDuration: refused by its own count, the bucket is blocked from now
    redis.call('SET', blocker, '1', 'PX', block)
    remaining, retry = 0, max(retry, block * 1000)
  end
  return 0, 0, remaining > 0 and remaining or 0, ms(reset), ms(retry)
end

return decide_each('token-bucket', decide)
