-- Consumes of one token-bucket policy each: what consume.lua answers for decisions { 'c1', 't:...' }, without its
-- general machinery, as consume-fixed-window.lua is for a fixed window (see there for why and what it saves).
-- test/rate-limit/consume-script.spec.ts checks that both answer alike, step by step, one decision and several.
-- KEYS per decision: its bucket (the TAT) and its block key (same hash tag). ARGV per decision: 'c1', then the policy
-- 't:<limit>:<window ms>:<cost>:<burst>:<block ms>'. Returns five values per decision: allAllowed, allowed, remaining,
-- resetMs, retryAfterMs (a failed decision: -1, the error text, 0, 0, 0, so it fails alone). A call holds one decision
-- (every call on a cluster) or the decisions of one tick on one server, decided in order at one instant (one TIME).
-- The algorithm is consume.lua's token bucket (GCRA) step for step; its comments there say why each step is so. It is
-- written out in both, not shared as functions of a prelude: tried (2026-12-03), the calls cost a lone decision 3-5 %
-- more Redis time here and 6-8 % more in consume.lua (12-round pairs of old and new on one server, 3 runs; an A/A of
-- the same script put the same pairs at 1.00).
-- Written as one loop with no prelude (read-counter.lua's read and each-consume.lua's loop written out here), since
-- 2026-12-04: counted with callgrind inside EVALSHA (Redis 7.0), 38.4k instructions per decision before, 33.1k after
-- in calls of 16 decisions (63.3k -> 57.8k in calls of 2, 84.6k -> 81.0k alone). What it saves, each measured alone:
-- the function calls and returns of the prelude's loop, read and ms() (~3.9k); one pcall around the loop instead of a
-- redis.pcall and a type() per write, and a TAT converted once (`raw + 0`; tonumber converts a string twice) (~0.3k);
-- the writes' figures formatted as integers ('%d': Redis writes a number argument with '%.17g', and '%.0f' costs as
-- much) (~0.9k); the reply's table made at its size (~0.45k). Then one table of what a charged bucket owes instead of
-- two (its TAT and its rounding): 33.2k -> 32.3k in calls of 16, 57.8k -> 55.8k in calls of 2.
local floor, ceil, max, format = math.floor, math.ceil, math.max, string.format
-- a TAT at or past 2^63 µs is no integer Redis holds (consume.lua's charge says more)
local TAT_MAX = 2 ^ 63
local TAT_TOO_FAR = 'ERR rate-limit token bucket: its TAT would pass 2^63 µs (burst × ttl / limit is too long)'
-- read-counter.lua's answers for a bucket it cannot read
local NOT_A_NUMBER = 'ERR the rate-limit counter holds a value that is not a number (or NaN, infinite, past 2^63)'
local WRONGTYPE = 'WRONGTYPE Operation against a key holding the wrong kind of value'
local nk = #KEYS
if #ARGV ~= nk then error('malformed token-bucket consume: ' .. nk .. ' keys, ' .. #ARGV .. ' values') end
-- five answers per decision, made at their number at once (grown one by one, the table is rebuilt 8 times for a call
-- of 16); string.byte puts each value on Lua's stack, so only up to a bound
local n_out = 5 * floor(nk / 2)
local out = n_out <= 400 and { string.byte(string.rep('\0', n_out), 1, -1) } or {}
-- parsed policies by their ARGV value: a tick's decisions mostly share one
local SPECS = {}
local now -- µs, the server's clock, read once by the first decision that gets past its reads
-- buckets this call charged: what each owes after its charge, exactly (consume.lua's check says why); kept only for a
-- call of several decisions (a lone one has no later decision to read them)
local DUE_OF = nk > 2 and {} or false
-- the decision at hand, and the policy of the one before (its figures kept while the next has the same)
local d = 1
local last, limit, cost, burst, block, win_us, cap, fit, step
-- true while a decision converts its TAT: a Lua error then is a value that is not a number
local reading = false
-- set before a malformed call's error, which fails the whole call
local malformed = false
local function refuse_call(message)
  malformed = true
  error(message)
end

-- Decides from decision d on. A decision that cannot be made raises its error reply ({ err = ... }) before it writes:
-- the loop below answers it and calls this again for the next one.
local function run()
  while d <= nk / 2 do
    local o, i = 5 * d - 5, 2 * d
    if ARGV[i - 1] ~= 'c1' then refuse_call('malformed token-bucket consume: ' .. tostring(ARGV[i - 1])) end
    local spec = ARGV[i]
    if spec ~= last then
      local p = SPECS[spec]
      if not p then
        local l, w, c, b, k = string.match(spec, '^t:(%d+):(%d+):(%d+):(%d+):(%d+)$')
        if not l then refuse_call('malformed token-bucket consume: ' .. tostring(spec)) end
        -- digits only: `+ 0` converts them as tonumber does
        b, w, c = b + 0, w * 1000, c + 0
        -- in units of 1/limit µs: a token is the window, the bucket burst windows (consume.lua's check says why)
        local cp = b * w
        p = { l + 0, c, b, k + 0, w, cp, cp < 2 ^ 53 and cp or cp * (1 + 2 ^ -48), c * w }
        SPECS[spec] = p
      end
      limit, cost, burst, block, win_us, cap, fit, step = p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]
      last = spec
    end
    local bucket, blocker = KEYS[i - 1], KEYS[i]
    -- read-counter.lua's read: MGET reads a foreign type as nil, so a bucket read as nil is confirmed missing; a value
    -- that is not a number (or NaN, ±inf, past ±2^63: never ours) fails the decision
    local v = redis.call('MGET', bucket, blocker)
    local tat = v[1]
    if tat then
      reading = true
      tat = tat + 0
      reading = false
      if not (tat > -TAT_MAX and tat < TAT_MAX) then error({ err = NOT_A_NUMBER }) end -- NaN fails both
    elseif redis.call('EXISTS', bucket) == 1 then
      error({ err = WRONGTYPE })
    else
      tat = 0
    end
    local blocked = v[2] and redis.call('PTTL', blocker) or 0
    if not now then
      local t = redis.call('TIME')
      now = t[1] * 1000000 + t[2]
    end
    -- stored negative by consume.lua or this script: its expiry is known (see the charge below)
    local stored = false
    if tat < 0 then
      tat = -tat
      stored = tat
    end
    -- a TAT with a fraction (reward.lua wrote them before 2026-12-03) cannot take the charge's INCRBY: rounded up (a µs
    -- later, so it never admits more) and the charge SETs it whole
    if tat % 1 ~= 0 then tat, stored = ceil(tat), false end
    if tat < now then tat = now end
    -- owed as stored (each charge rounds its TAT up to a whole µs), exactly for a bucket this call charged
    local base = (tat - now) * limit
    local owed = base
    if DUE_OF then
      local charged = DUE_OF[bucket]
      if charged and now + ceil(charged / limit) == tat then owed = charged end
    end
    local due = owed + step
    if due <= fit and blocked <= 0 then
      local ahead = ceil(due / limit) -- µs from now to the TAT after the charge
      if cost > 0 then
        local new_tat = now + ahead
        if new_tat >= TAT_MAX then error({ err = TAT_TOO_FAR }) end
        local new_cell = floor(new_tat / win_us)
        -- a write Redis refuses raises its error reply: this decision alone fails, nothing written for it. Figures
        -- written with '%d' (whole, under 2^63): '%.17g' (and Redis, for a number) writes 1e17 and up in e-notation,
        -- which INCRBY refuses
        if stored and floor(stored / win_us) == new_cell then
          -- refused for a TAT Redis cannot add to (one in e-notation, '-1.79643e+15': never written by us); the
          -- difference is under a window
          redis.call('INCRBY', bucket, format('%d', stored - new_tat))
        else
          local ttl = ceil(((new_cell + 2) * win_us - now) / 1000)
          redis.call('SET', bucket, format('%d', -new_tat), 'PX', format('%d', ttl))
        end
        if DUE_OF then DUE_OF[bucket] = due end
      end
      local remaining = floor((cap - due) / win_us)
      out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] =
        1, 1, remaining > 0 and remaining or 0, ahead > 0 and ceil(ahead / 1000) or 0, 0
    else
      local retry = 0
      if due > fit then retry = cost > burst and win_us or (base + step - cap) / limit end
      local remaining = 0
      if blocked > 0 then
        -- a blocked bucket refuses until its block key expires, whatever the bucket says
        retry = max(retry, blocked * 1000)
      elseif block > 0 then
        -- blockDuration: refused by its own count, the bucket is blocked from now
        redis.call('SET', blocker, '1', 'PX', block)
        retry = max(retry, block * 1000)
      else
        remaining = floor((cap - owed) / win_us)
      end
      local reset = tat - now
      out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = 0, 0, remaining > 0 and remaining or 0,
        reset > 0 and ceil(reset / 1000) or 0, retry > 0 and ceil(retry / 1000) or 0
    end
    d = d + 1
  end
end

-- One pcall for the call's decisions (a redis.pcall per write and a type() of its answer cost more), as consume.lua
-- does: it gets the error reply of a redis.call (a table { err = ... }; a string before Redis 7) or of a read, a TAT
-- that is not a number as a Lua error while `reading`. A malformed call fails whole.
while true do
  local ok, e = pcall(run)
  if ok then return out end
  if malformed then error(e, 0) end
  if reading then
    reading, e = false, NOT_A_NUMBER
  else
    if type(e) == 'table' then e = e.err end
    e = tostring(e)
    -- an error reply keeps its code (WRONGTYPE ...); a Lua error (user_script:12: attempt to...) gets ERR
    if not string.match(e, '^%u[%u_-]* ') then e = 'ERR ' .. e end
  end
  local o = 5 * d - 5
  out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = -1, e, 0, 0, 0
  d = d + 1
end
