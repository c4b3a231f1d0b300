-- Rate-limit decisions. One decision is one request: every policy of it is checked, and only when ALL of them admit
-- the request are they ALL charged (all or nothing). One call carries one decision or several independent ones (the
-- decisions a process makes in the same tick, batched on a single server), all decided atomically at one instant.
-- The time comes from the Redis server (TIME), never from the app servers, so app servers with skewed clocks agree.
-- Needs Redis >= 5 (scripts are replicated by their effects, so writing after TIME is allowed; always so on Redis 7).
--
-- KEYS     per policy of every decision, in order: its counter and its block key (set while the counter is blocked:
--          blockDuration or RateLimitService.block); on a cluster one call holds one decision whose keys share a
--          {hash tag}
-- ARGV     per decision: mode ('c' = consume: check and charge, 'p' = peek: check only, writes nothing), the number
--          of its policies n, then 6 values per policy: algorithm ('s' sliding window, 'f' fixed window,
--          't' token bucket / GCRA), limit, window ms (token bucket: time to refill `limit` tokens), cost, burst,
--          block ms (0: none; else a policy that refuses a consume blocks its counter that long)
-- Returns  per decision: allAllowed, then per policy: allowed, remaining, resetMs, retryAfterMs; for a decision
--          that failed (an error reply under one of its keys, e.g. WRONGTYPE: a foreign value), -1, the error text,
--          then zeros to the same length, so one bad key fails only its own decision, never the batch
--   remaining/resetMs are after the charge when the request is admitted, else as they stand;
--   resetMs: ms until the full limit is available again; retryAfterMs: ms until this request would be admitted.
--
-- Written as flat loops over parallel arrays (no closures or tables per policy): this runs on every request.

local now_us -- microseconds; read once, and only if a sliding window or a token bucket needs it
-- per policy i of the decision at hand, 8 slots from o = (i - 1) * 8 (one flat table, reused by every decision):
-- o+1 allowed, o+2 remaining now, o+3 remaining after the charge, o+4 reset now, o+5 reset after the charge,
-- o+6 retry, o+7 state for the charge (count or new TAT), o+8 refused because the counter is blocked
local S = {}
local out = {}
-- the decision at hand: its mode, its number of policies, where its keys and its policy values start
local peek, n, k0, a0

-- reads the server's clock into now_us the first time a policy needs it
local function read_now()
  if not now_us then
    local t = redis.call('TIME')
    now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
end

-- ms until the newest member of a sliding window leaves it (0 for an empty window). The newest member has the
-- highest score, so it is read by rank from the end: O(log N). (Reaching it with ZRANGEBYSCORE ... LIMIT count-1
-- would walk every member of the window: 1 ms per call at 200k members.)
local function newest_leaves(i)
  local o = (i - 1) * 8
  if S[o + 7] == 0 then return 0 end
  local win_us = tonumber(ARGV[a0 + (i - 1) * 6 + 3]) * 1000
  local newest = redis.call('ZRANGE', KEYS[k0 + 2 * i - 1], -1, -1, 'WITHSCORES')
  return newest[2] and (tonumber(newest[2]) + win_us - now_us) or 0
end

local function decide()
  local all = true

  for i = 1, n do
    local o = (i - 1) * 8
    local b = a0 + (i - 1) * 6
    local algo = ARGV[b + 1]
    local limit = tonumber(ARGV[b + 2])
    local win_us = tonumber(ARGV[b + 3]) * 1000
    local cost = tonumber(ARGV[b + 4])
    local key = KEYS[k0 + 2 * i - 1]

    if algo == 'f' then
      -- Fixed window: a counter created with the window's TTL by the request that opens the window (SET PX), then
      -- INCRBY, in this same atomic call, so no counter can live without an expiry.
      local count = tonumber(redis.call('GET', key) or '0')
      local left_us = 0
      if count > 0 then
        local pttl = redis.call('PTTL', key)
        if pttl < 0 then count = 0 else left_us = pttl * 1000 end -- no expiry (never by us): open a new window
      end
      S[o + 1] = count + cost <= limit
      S[o + 2] = limit - count
      S[o + 3] = limit - count - cost
      S[o + 4] = left_us
      if count == 0 then
        S[o + 5] = win_us
        S[o + 6] = win_us
      else
        S[o + 5] = left_us
        S[o + 6] = left_us
      end
      S[o + 7] = count

    elseif algo == 's' then
      -- Sliding window, exact: a sorted set with one member per admitted unit, scored by its time in microseconds.
      read_now()
      local from = string.format('%.0f', now_us - win_us) -- members scored <= from have left the window
      local count
      if peek then
        count = redis.call('ZCOUNT', key, '(' .. from, '+inf')
      else
        redis.call('ZREMRANGEBYSCORE', key, '-inf', from)
        count = redis.call('ZCARD', key)
      end
      S[o + 1] = count + cost <= limit
      S[o + 2] = limit - count
      S[o + 3] = limit - count - cost
      -- false: worked out at the end, only if the answer needs it (the newest member leaves the window last)
      S[o + 4] = false
      S[o + 5] = cost > 0 and win_us or false
      S[o + 6] = 0
      if not S[o + 1] then
        if cost > limit then
          S[o + 6] = win_us -- can never fit; the caller validates cost, this is only a guard
        else
          -- the request fits once (count + cost - limit) of the oldest members have left. Read by rank (O(log N)):
          -- the window's members follow the ones a peek left in place (those that already left the window).
          local first = 0
          if peek then first = redis.call('ZCARD', key) - count end
          local rank = first + count + cost - limit - 1
          local nth = redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')
          S[o + 6] = tonumber(nth[2]) + win_us - now_us
        end
      end
      S[o + 7] = count

    elseif algo == 't' then
      -- Token bucket as GCRA: one value, the theoretical arrival time (TAT, microseconds). `limit` tokens refill
      -- over the window (the steady rate), `burst` tokens fit in the bucket.
      read_now()
      local burst = tonumber(ARGV[b + 5])
      -- Microseconds per token, a whole number: the state is an absolute time (~1.8e15 µs, where a double steps by
      -- 0.25), so a fractional interval (60 s / 9) rounded at every step and a full burst of `limit` could find its
      -- last token a µs short. Whole µs add exactly; the rate moves by under 0.5 µs per token.
      local interval = math.max(1, math.floor(win_us / limit + 0.5))
      local capacity = burst * interval
      local tat = tonumber(redis.call('GET', key) or '0')
      if tat < now_us then tat = now_us end
      local new_tat = tat + cost * interval
      local allow_at = new_tat - capacity
      S[o + 1] = now_us + 0.5 >= allow_at
      S[o + 2] = math.floor((capacity - (tat - now_us)) / interval + 1e-9)
      S[o + 3] = math.floor((capacity - (new_tat - now_us)) / interval + 1e-9)
      S[o + 4] = tat - now_us
      S[o + 5] = new_tat - now_us
      if S[o + 1] then
        S[o + 6] = 0
      elseif cost > burst then
        S[o + 6] = win_us
      else
        S[o + 6] = allow_at - now_us
      end
      S[o + 7] = new_tat

    else
      error('unknown rate-limit algorithm ' .. tostring(algo))
    end
    -- a blocked counter refuses until its block key expires, whatever the algorithm says
    S[o + 8] = false
    local blocked = redis.call('PTTL', KEYS[k0 + 2 * i])
    if blocked > 0 then
      local retry = S[o + 1] and 0 or S[o + 6]
      S[o + 1] = false
      S[o + 2] = 0
      S[o + 6] = math.max(retry, blocked * 1000)
      S[o + 8] = true
    end
    if not S[o + 1] then all = false end
  end

  local charge = all and not peek
  if charge then
    for i = 1, n do
      local o = (i - 1) * 8
      local b = a0 + (i - 1) * 6
      local algo = ARGV[b + 1]
      local cost = tonumber(ARGV[b + 4])
      local key = KEYS[k0 + 2 * i - 1]
      if cost > 0 then
        if algo == 'f' then
          if S[o + 7] == 0 then
            redis.call('SET', key, cost, 'PX', tonumber(ARGV[b + 3]))
          else
            redis.call('INCRBY', key, cost)
          end
        elseif algo == 's' then
          local stamp = string.format('%.0f', now_us)
          local count = S[o + 7]
          local j = 1
          while j <= cost do
            local args = {}
            local last = math.min(cost, j + 499)
            for m = j, last do
              args[#args + 1] = stamp
              -- unique member: the count only grows between calls that see the same microsecond
              args[#args + 1] = stamp .. ':' .. (count + m)
            end
            redis.call('ZADD', key, unpack(args))
            j = last + 1
          end
          redis.call('PEXPIRE', key, tonumber(ARGV[b + 3]) + 1)
        else
          redis.call('SET', key, string.format('%.17g', S[o + 7]), 'PX', math.ceil((S[o + 7] - now_us) / 1000) + 1)
        end
      end
    end
  end

  if not all and not peek then
    -- blockDuration: a policy that refused this consume by its own count blocks its counter from now
    for i = 1, n do
      local o = (i - 1) * 8
      local block_ms = tonumber(ARGV[a0 + (i - 1) * 6 + 6])
      if block_ms > 0 and not S[o + 1] and not S[o + 8] then
        redis.call('SET', KEYS[k0 + 2 * i], '1', 'PX', block_ms)
        S[o + 6] = math.max(S[o + 6], block_ms * 1000)
        S[o + 2] = 0
      end
    end
  end
  out[#out + 1] = all and 1 or 0
  for i = 1, n do
    local o = (i - 1) * 8
    local rem, reset
    if charge then
      rem, reset = S[o + 3], S[o + 5]
    else
      rem, reset = S[o + 2], S[o + 4]
    end
    if reset == false then reset = newest_leaves(i) end
    local r = S[o + 6]
    if S[o + 1] then r = 0 end
    out[#out + 1] = S[o + 1] and 1 or 0
    out[#out + 1] = rem > 0 and rem or 0
    out[#out + 1] = reset > 0 and math.ceil(reset / 1000) or 0
    out[#out + 1] = r > 0 and math.ceil(r / 1000) or 0
  end
end

-- Decisions one after another; each step moves past at least two ARGV values, so this ends.
local a = 1
k0 = 0
while a <= #ARGV do
  peek = ARGV[a] == 'p'
  n = tonumber(ARGV[a + 1])
  if not n or n < 1 then error('malformed rate-limit call: a decision needs at least one policy') end
  a0 = a + 1
  local mark = #out
  -- pcall gets the error reply of a redis.call (as a string, or a table { err = ... }) or a Lua error (a foreign
  -- string read as a number). Checks read every key before any charge, so a failing decision wrote nothing.
  local ok, e = pcall(decide)
  if not ok then
    for j = #out, mark + 1, -1 do out[j] = nil end
    out[mark + 1] = -1
    if type(e) == 'table' then e = e.err end
    e = tostring(e)
    -- an error reply keeps its code (WRONGTYPE ...); a Lua error (user_script:12: attempt to...) gets ERR
    if not string.match(e, '^%u[%u_-]* ') then e = 'ERR ' .. e end
    out[mark + 2] = e
    for j = 3, 1 + n * 4 do out[mark + j] = 0 end
  end
  k0 = k0 + 2 * n
  a = a + 2 + n * 6
end
return out
