-- Rate-limit decisions. One decision is one request: every policy of it is checked, and only when ALL of them admit
-- the request are they ALL charged (all or nothing). One call carries one decision or several independent ones (the
-- decisions a process makes in the same tick, batched on a single server), all decided atomically at one instant.
-- The time comes from the Redis server (TIME), never from the app servers, so app servers with skewed clocks agree.
-- Needs Redis >= 5 (scripts are replicated by their effects, so writing after TIME is allowed; always so on Redis 7).
--
-- KEYS     per policy of every decision, in order: its counter and its block key (set while the counter is blocked:
--          blockDuration or RateLimitService.block); on a cluster one call holds one decision whose keys share a
--          {hash tag}
-- ARGV     per decision: its head, mode and number of policies n in one value ('c1': consume, check and charge, one
--          policy; 'p2': peek, check only, writes nothing, two policies), then one value per policy, its six figures
--          joined by ':' — algorithm ('s' sliding window, 'f' fixed window, 't' token bucket / GCRA), limit, window ms
--          (token bucket: time to refill `limit` tokens), cost, burst, block ms (0: none; else a policy that refuses a
--          consume blocks its counter that long), e.g. 'f:100:60000:1:100:0'. Two values per decision instead of
--          2 + 6n: Redis parses and Lua interns fewer strings, and a policy repeated across the batch is parsed once.
-- Returns  per decision: allAllowed, then per policy: allowed, remaining, resetMs, retryAfterMs; for a decision
--          that failed (an error reply under one of its keys, e.g. WRONGTYPE: a foreign value), -1, the error text,
--          then zeros to the same length, so one bad key fails only its own decision, never the batch
--   remaining/resetMs are after the charge when the request is admitted, else as they stand;
--   resetMs: ms until the full limit is available again; retryAfterMs: ms until this request would be admitted.
--
-- Written as flat code over a reused table (no closures or tables per policy): this runs on every request. A single
-- policy's consume ('c1', the guard's usual decision) goes straight through (consume_one) without the per-policy
-- table; every other decision uses decide(); both use the same check() and charge(). A string counter (fixed window,
-- token bucket) and its block key are read by read_string_counter (read-counter.lua: one MGET, an EXISTS for a
-- counter read as nil), a sliding-window log written and read by sliding-log.lua's functions: both files are put in
-- front of this one, and the lean scripts use them too.

local now_us -- microseconds; read once, and only if a sliding window or a token bucket needs it
local stamp -- now_us as a whole-number string (sliding-window member scores), made once
-- per policy i of the decision at hand, 12 slots from o = (i - 1) * 12 (one flat table, reused by every decision):
-- o+1 allowed, o+2 remaining now, o+3 remaining after the charge, o+4 reset now, o+5 reset after the charge,
-- o+6 retry, o+7 state for the charge (count or new TAT), o+8 refused because the counter is blocked, o+9 its spec,
-- o+10 token bucket: the TAT as stored by this script, its expiry known (false: unknown), o+11 token bucket: what it
-- owes after the charge (1/limit µs, see check), o+12 the counter as stored (fixed window, token bucket)
local S = {}
local out = {}
-- parsed policies by their ARGV value: { algorithm, limit, window µs, cost, burst, block ms, window ms, token bucket:
-- its capacity (burst × window µs, see check), the window's lower bound for this call (sliding window, made when first
-- needed), token bucket: the most a bucket may owe and admit (its capacity, a hair over it past 2^53) }
local SPECS = {}
-- token buckets this call charged, by key: what each owes after its charge, exactly (see check); kept only for a call
-- of several decisions (a lone one has no later decision to read them)
local DUE_OF = #KEYS > 2 and {} or false
-- a TAT at or past 2^63 µs is no integer Redis holds (see charge)
local TAT_MAX = 2 ^ 63
local TAT_TOO_FAR = 'ERR rate-limit token bucket: its TAT would pass 2^63 µs (burst × ttl / limit is too long)'
-- what Redis answers an INCRBY of a value that is not an integer (see chargeable)
local NOT_INTEGER = 'ERR value is not an integer or out of range'
-- decision heads: number of policies by head ('c1' -> 1)
local HEADS = {}
-- the decision at hand: its mode, its number of policies, where its keys and its policy values start
local peek, n, k0, a0

-- library functions as locals: a global is a table lookup and a field another, on every use
local floor, ceil, max, format = math.floor, math.ceil, math.max, string.format

-- reads the server's clock into now_us the first time a policy needs it
local function read_now()
  if not now_us then
    local t = redis.call('TIME')
    now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
    stamp = format('%.0f', now_us)
  end
end

local function spec_of(v)
  local p = SPECS[v]
  if p then return p end
  local algo, limit, win, cost, burst, block = string.match(v, '^(%a):(%d+):(%d+):(%d+):(%d+):(%d+)$')
  if not algo then error('malformed rate-limit policy ' .. tostring(v)) end
  if algo ~= 'f' and algo ~= 's' and algo ~= 't' then error('unknown rate-limit algorithm ' .. algo) end
  win = tonumber(win)
  local cap = tonumber(burst) * win * 1000
  -- past 2^53 the figures are no longer whole: a relative hair of slack so that a full burst still fits
  p = { algo, tonumber(limit), win * 1000, tonumber(cost), tonumber(burst), tonumber(block), win, cap, false,
    cap < 2 ^ 53 and cap or cap * (1 + 2 ^ -48) }
  SPECS[v] = p
  return p
end

-- read_string_counter (read-counter.lua, put in front of this file) for check(): a counter it cannot read fails the
-- decision (the pcall below)
local function read_counter_or_fail(key, bkey)
  local value, blocked, raw = read_string_counter(key, bkey)
  if not value then error({ err = blocked }) end
  return value, blocked, raw
end

-- µs until the newest member of a sliding window of `count` members leaves it (0 for an empty window); a member
-- scored +inf or past 2^63 µs fails the decision (see leaves_at)
local function newest_leaves(key, count, win_us)
  if count == 0 then return 0 end
  local us = leaves_at(key, -1, win_us, now_us)
  if not us then error({ err = LOG_SCORE_ERROR }) end
  return us
end

-- One policy's verdict, nothing written. Returns allowed by its algorithm, remaining now, remaining after the charge,
-- reset now, reset after the charge (µs; false: the newest member's, worked out only if the answer needs it),
-- retry (µs), the state for the charge (count or new TAT), the TAT as this script stored it (false: its expiry is
-- unknown), the block key's TTL (ms, > 0: blocked), for a token bucket what it owes after the charge (in 1/limit µs),
-- and the counter as stored (fixed window, token bucket; nil when missing).
local function check(p, key, bkey)
  local algo, limit, win_us, cost = p[1], p[2], p[3], p[4]
  if algo == 'f' then
    -- Fixed window: a counter created with the window's TTL by the request that opens the window (SET PX), then
    -- INCRBY, in this same atomic call, so no counter can live without an expiry.
    local count, blocked, raw = read_counter_or_fail(key, bkey)
    local left_us = 0
    if count > 0 then
      local pttl = redis.call('PTTL', key)
      if pttl < 0 then count = 0 else left_us = pttl * 1000 end -- no expiry (never by us): open a new window
    end
    local after = count == 0 and win_us or left_us
    return count + cost <= limit, limit - count, limit - count - cost, left_us, after, after, count, false, blocked, 0,
      raw
  elseif algo == 's' then
    -- Sliding window, exact: a sorted set with one member per admitted unit, scored by its time in microseconds.
    -- Members at or before `from` have left the window. A consume removes them before it counts, so it has written
    -- before its ZADD: under maxmemory with noeviction Redis lets a script that has written go on, and the
    -- decision is made and stored as usual (test/conformance/failure.conformance.spec.ts). A peek counts with
    -- ZCOUNT and writes nothing.
    read_now()
    local from = p[9]
    if not from then
      from = format('%.0f', now_us - win_us)
      p[9] = from
    end
    local blocked = redis.call('PTTL', bkey)
    local count
    if peek then
      count = redis.call('ZCOUNT', key, '(' .. from, '+inf')
    else
      redis.call('ZREMRANGEBYSCORE', key, '-inf', from)
      count = redis.call('ZCARD', key)
    end
    local allowed = count + cost <= limit
    local retry = 0
    if not allowed then
      if cost > limit then
        retry = win_us -- can never fit; the caller validates cost, this is only a guard
      else
        -- the request fits once (count + cost - limit) of the oldest members have left. Read by rank (O(log N)):
        -- the window's members follow the ones a peek left in place (those that already left the window).
        local first = 0
        if peek then first = redis.call('ZCARD', key) - count end
        retry = leaves_at(key, first + count + cost - limit - 1, win_us, now_us)
        if not retry then error({ err = LOG_SCORE_ERROR }) end
      end
    end
    return allowed, limit - count, limit - count - cost, false, cost > 0 and win_us or false, retry, count, false,
      blocked
  end
  -- Token bucket as GCRA: one value, the theoretical arrival time (TAT, whole microseconds). `limit` tokens refill
  -- over the window (the steady rate), `burst` tokens fit in the bucket. Worked in units of 1/limit µs, where a token
  -- is the window (win_us units) and the bucket burst × win_us: whole numbers (exact below 2^53), so the rate is
  -- exactly `limit` per window. Until 2026-12-03 a token was a whole number of µs (at least 1), rounded: 450,000 a
  -- second refilled at 500,000, 5,000,000 a second at 1,000,000. consume-token-bucket.lua and reward.lua do the same.
  read_now()
  local cap = p[8]
  local tat, blocked, raw = read_counter_or_fail(key, bkey)
  -- stored negative by this script: then the key expires at or after the end of the window-long cell after the one
  -- holding |TAT| (see charge); a positive TAT (reward.lua, an older version) has an unknown expiry
  local stored = tat < 0 and -tat or false
  if tat < 0 then tat = -tat end
  -- a TAT with a fraction (reward.lua wrote them before 2026-12-03) cannot take the charge's INCRBY: rounded up (a µs
  -- later, so it never admits more) and the charge SETs it whole
  if tat % 1 ~= 0 then tat, stored = ceil(tat), false end
  if tat < now_us then tat = now_us end
  -- what the bucket owes: (TAT - now) × limit as stored. A charge stores its TAT rounded up to a whole µs, a little
  -- more than it owes (under 1 µs per charge: the rate's only error, never in the client's favour); a bucket this
  -- call charged owes exactly what its charge left (a burst at one instant fits whole), while its TAT reads as that
  -- charge stored it. (Until 2026-12-04 kept as the TAT stored and what rounding it up added, two tables: the same
  -- figure for any TAT under 2^53 µs, the year 2255.)
  local base = (tat - now_us) * limit
  local owed = base
  if DUE_OF then
    local charged = DUE_OF[key]
    if charged and now_us + ceil(charged / limit) == tat then owed = charged end
  end
  local step = cost * win_us
  local due = owed + step
  local allowed = due <= p[10]
  local retry = 0
  -- from the TAT as stored: what a later call reads
  if not allowed then retry = cost > p[5] and win_us or (base + step - cap) / limit end
  local ahead = ceil(due / limit) -- µs from now to the TAT after the charge
  return allowed, floor((cap - owed) / win_us), floor((cap - due) / win_us), tat - now_us, ahead, retry,
    now_us + ahead, stored, blocked, due, raw
end

-- Charges one admitted policy (cost > 0): `state`, `stored` and `due` as check() returned them.
local function charge(p, key, state, stored, due)
  local algo, cost = p[1], p[4]
  if algo == 'f' then
    if state == 0 then
      redis.call('SET', key, cost, 'PX', p[7])
    else
      redis.call('INCRBY', key, cost)
    end
  elseif algo == 's' then
    add_to_log(key, stamp, state, cost)
    keep_log(key, p[7])
  else
    -- kept one window past the instant the bucket is full again, so a client that comes back within a window finds
    -- its key (MGET) instead of paying an EXISTS for a missing one; a TAT in the past reads as now.
    -- The key expires at the end of the cell after the one holding the new TAT (cells are window-long and aligned
    -- to the epoch), so at least one window after the bucket is full again and at most two. The expiry is set only
    -- when the TAT moves to another cell: in between the TAT moves by a whole number of µs with INCRBY, which keeps
    -- the expiry and changes the stored integer in place (a SET with PX costs Redis about 1 µs more, Redis 7 rewriting
    -- it to PXAT for propagation; a SET with KEEPTTL about 0.3 µs more). Stored negative to mark it so.
    -- A TAT at or past 2^63 µs (292,000 years after 1970: a charge that long; the options refuse a bucket whose
    -- span passes 100 years) fails the decision before it writes. Under it, written with '%.0f': '%.17g' (and Redis,
    -- for a number) writes 1e17 and up in e-notation, which the next charge's INCRBY refuses. The INCRBY's figure is
    -- under a window.
    if state >= TAT_MAX then error({ err = TAT_TOO_FAR }) end
    local new_cell = floor(state / p[3])
    if stored and floor(stored / p[3]) == new_cell then
      redis.call('INCRBY', key, stored - state)
    else
      local ttl = ceil(((new_cell + 2) * p[3] - now_us) / 1000)
      redis.call('SET', key, format('%.0f', -state), 'PX', format('%.0f', ttl))
    end
    if DUE_OF then DUE_OF[key] = due end
  end
end

-- Fails the decision (an error: the pcall below) unless charge() can make this charge. Run on each policy of a decision
-- of several before the first charge, which then all succeed: until 2026-12-03 a charge Redis refused after an earlier
-- one had been made left that one charged, though the decision failed. An INCRBY needs the value stored in Redis's own
-- integer digits: a count or TAT Lua reads as a number but Redis cannot add to ('1.5', '1e2', '-1.79643e+15': never
-- written by us) fails here, as the INCRBY itself fails a decision of one policy. (A first write refused under OOM
-- refuses the first charge, before any other; a script that has written goes on.)
local function chargeable(p, state, stored, raw)
  local algo = p[1]
  if algo == 'f' then
    if state > 0 and raw ~= format('%.0f', state) then error({ err = NOT_INTEGER }) end
  elseif algo == 't' then
    if state >= TAT_MAX then error({ err = TAT_TOO_FAR }) end
    if stored and floor(stored / p[3]) == floor(state / p[3]) and raw ~= format('%.0f', -stored) then
      error({ err = NOT_INTEGER })
    end
  end
end

-- a reply's ms figure from µs
local function ms(us)
  return us > 0 and ceil(us / 1000) or 0
end

-- One policy, consume: what decide() answers for it, without the per-policy table and its three passes over it
-- (about 1.5 µs of Redis CPU per request).
local function consume_one()
  local p = spec_of(ARGV[a0 + 1])
  local key, bkey = KEYS[k0 + 1], KEYS[k0 + 2]
  local allowed, rem, rem_after, reset, reset_after, retry, state, stored, blocked, due = check(p, key, bkey)
  if blocked > 0 then
    -- a blocked counter refuses until its block key expires, whatever the algorithm says
    if allowed then retry = 0 end
    allowed, rem, retry = false, 0, max(retry, blocked * 1000)
  elseif allowed then
    if p[4] > 0 then charge(p, key, state, stored, due) end
    rem, reset, retry = rem_after, reset_after, 0
  elseif p[6] > 0 then
    -- read before the block's write: a log member scored +inf fails the decision, which writes nothing
    if reset == false then reset = newest_leaves(key, state, p[3]) end
    -- blockDuration: a policy that refused this consume by its own count blocks its counter from now
    redis.call('SET', bkey, '1', 'PX', p[6])
    rem, retry = 0, max(retry, p[6] * 1000)
  end
  if reset == false then reset = newest_leaves(key, state, p[3]) end
  local m = #out
  out[m + 1] = allowed and 1 or 0
  out[m + 2] = allowed and 1 or 0
  out[m + 3] = rem > 0 and rem or 0
  out[m + 4] = ms(reset)
  out[m + 5] = ms(retry)
end

local function decide()
  local all = true
  for i = 1, n do
    local o = (i - 1) * 12
    local p = spec_of(ARGV[a0 + i])
    S[o + 9] = p
    local blocked
    S[o + 1], S[o + 2], S[o + 3], S[o + 4], S[o + 5], S[o + 6], S[o + 7], S[o + 10], blocked, S[o + 11], S[o + 12] =
      check(p, KEYS[k0 + 2 * i - 1], KEYS[k0 + 2 * i])
    -- a blocked counter refuses until its block key expires, whatever the algorithm says
    S[o + 8] = false
    if blocked > 0 then
      local retry = S[o + 1] and 0 or S[o + 6]
      S[o + 1] = false
      S[o + 2] = 0
      S[o + 6] = max(retry, blocked * 1000)
      S[o + 8] = true
    end
    if not S[o + 1] then all = false end
  end

  local charged = all and not peek
  -- a log's resetMs (its newest member: a refusal, a peek, a cost of 0) is read before anything is written, as a log
  -- member scored +inf fails the decision (see leaves_at); the slot the answer takes it from
  for i = 1, n do
    local o = (i - 1) * 12
    local r = charged and o + 5 or o + 4
    if S[r] == false then S[r] = newest_leaves(KEYS[k0 + 2 * i - 1], S[o + 7], S[o + 9][3]) end
  end
  if charged then
    -- every charge one Redis takes, or none made: checked before the first (a failing decision writes nothing)
    for i = 1, n do
      local o = (i - 1) * 12
      if S[o + 9][4] > 0 then chargeable(S[o + 9], S[o + 7], S[o + 10], S[o + 12]) end
    end
    for i = 1, n do
      local o = (i - 1) * 12
      local p = S[o + 9]
      if p[4] > 0 then charge(p, KEYS[k0 + 2 * i - 1], S[o + 7], S[o + 10], S[o + 11]) end
    end
  end

  if not all and not peek then
    -- blockDuration: a policy that refused this consume by its own count blocks its counter from now
    for i = 1, n do
      local o = (i - 1) * 12
      local block_ms = S[o + 9][6]
      if block_ms > 0 and not S[o + 1] and not S[o + 8] then
        redis.call('SET', KEYS[k0 + 2 * i], '1', 'PX', block_ms)
        S[o + 6] = max(S[o + 6], block_ms * 1000)
        S[o + 2] = 0
      end
    end
  end
  out[#out + 1] = all and 1 or 0
  for i = 1, n do
    local o = (i - 1) * 12
    local rem, reset
    if charged then
      rem, reset = S[o + 3], S[o + 5]
    else
      rem, reset = S[o + 2], S[o + 4]
    end
    local r = S[o + 6]
    if S[o + 1] then r = 0 end
    out[#out + 1] = S[o + 1] and 1 or 0
    out[#out + 1] = rem > 0 and rem or 0
    out[#out + 1] = ms(reset)
    out[#out + 1] = ms(r)
  end
end

-- Decisions one after another from ARGV[a]; each step moves past at least two ARGV values, so this ends. One pcall
-- runs them all (a pcall per decision costs Redis about 0.3 µs each); a decision that fails ends it, and it is
-- called again for the decisions after that one.
local a, mark = 1, 0
k0 = 0
local function run()
  while a <= #ARGV do
    local head = ARGV[a]
    n = HEADS[head]
    if not n then
      n = tonumber(string.sub(head, 2))
      if not n or n < 1 then
        n = nil -- not a decision's failure: the call is malformed
        error('malformed rate-limit call: a decision needs at least one policy')
      end
      HEADS[head] = n
    end
    peek = string.byte(head) == 112 -- 'p'
    a0 = a
    mark = #out
    if n == 1 and not peek then consume_one() else decide() end
    k0 = k0 + 2 * n
    a = a + 1 + n
  end
end

-- pcall gets the error reply of a redis.call (as a string, or a table { err = ... }) or a Lua error (a foreign
-- string read as a number). Checks read every key before any charge, so a failing decision wrote nothing.
while true do
  local ok, e = pcall(run)
  if ok then break end
  if not n then error(e, 0) end
  for j = #out, mark + 1, -1 do out[j] = nil end
  out[mark + 1] = -1
  if type(e) == 'table' then e = e.err end
  e = tostring(e)
  -- an error reply keeps its code (WRONGTYPE ...); a Lua error (user_script:12: attempt to...) gets ERR
  if not string.match(e, '^%u[%u_-]* ') then e = 'ERR ' .. e end
  out[mark + 2] = e
  for j = 3, 1 + n * 4 do out[mark + j] = 0 end
  k0 = k0 + 2 * n
  a = a + 1 + n
end
return out
