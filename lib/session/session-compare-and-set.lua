-- Compare-and-sets of sessions, one or many in one call (the writes of one tick on a single server): each writes a
-- session only if it still holds exactly the value the caller read (the caller merged its change into that value, so
-- no concurrent update is lost). No JSON work here: the comparison is of two strings.
-- Write i: KEYS[2i-1] session, KEYS[2i] its tombstone. ARGV[4i-3] what the caller read: its stamp and where it is
-- (session-holds.lua), else the whole value, or '' for "no session": then the session is created, unless the id is
-- tombstoned (destroyed recently). ARGV[4i-2] the new value. ARGV[4i-1] the expiry: the idle ttl (ms, timed by
-- Redis's clock: session-expiry.lua), 'keep' (the current expiry) or 'none' (no expiry); ARGV[4i] the session's
-- absolute deadline (epoch ms), which caps the idle expiry.
-- Returns one reply per write, in order, each a single value: when written, the key's expiry (epoch ms by Redis's
-- clock; 0: none); when the session changed since the caller read it, its current value (nil when it is gone, and
-- when its deadline has come by Redis's clock: then the key is deleted, nothing written): merge into that and try
-- again; -1 when tombstoned; or the error of that write alone (redis.pcall: a key holding another
-- type, or a write refused for memory, fails only its own write, never the others). Flat replies, not a table per
-- write: a table each cost Redis ~0.6 µs more per write (INFO commandstats, batches of 16 ~500-byte sessions, Redis
-- 7.0).
-- A last argument past the writes' ('lean', sent under a reply budget: reply-budget.ts): a session changed since
-- the caller read it answers -2 instead of its value (nil still when gone), and the caller reads it under the budget.
-- The writes of one tick go in one call, and each conflict answering its session whole put several sessions in one
-- reply: past the server's client-output-buffer-limit normal, Redis closed the connection.
-- failed(reply): session-holds.lua, idleExpiry and epochArg: session-expiry.lua, both in front of this file

local lean = #ARGV > 2 * #KEYS

local function compareAndSet(key, tombstone, expected, value, expiry, deadline)
  local cur
  local held = holds(key, expected) -- session-holds.lua, in front of this file
  if held ~= nil then
    if failed(held) then return held end
    -- (a missing key reads as false, which is nil in the reply: a Lua nil would end the reply table here)
    if not held then
      if lean then return redis.call('EXISTS', key) == 1 and -2 or false end
      return redis.call('GET', key)
    end
  else
    cur = redis.pcall('GET', key)
    if failed(cur) then return cur end
    if not cur then
      if expected ~= '' then return false end
      if redis.call('EXISTS', tombstone) == 1 then return -1 end
    elseif cur ~= expected then
      if lean then return -2 end
      return cur
    end
  end
  local written
  if expiry == 'keep' then
    written = redis.pcall('SET', key, value, 'KEEPTTL')
    if failed(written) then return written end
    local at = redis.call('PEXPIRETIME', key)
    return at > 0 and at or 0
  end
  if expiry == 'none' then
    written = redis.pcall('SET', key, value)
    if failed(written) then return written end
    return 0
  end
  local at, over = idleExpiry(expiry, deadline)
  if over then
    -- the deadline has come by Redis's clock (the caller's, behind it, has not seen it): the session is over, as if
    -- Redis had expired it (a key its touching reads kept past the deadline goes now), never written
    redis.call('DEL', key)
    return false
  end
  written = redis.pcall('SET', key, value, 'PXAT', epochArg(at))
  if failed(written) then return written end
  return at
end

local out = {}
for i = 1, #KEYS / 2 do
  local a = 4 * i - 3
  out[i] = compareAndSet(KEYS[2 * i - 1], KEYS[2 * i], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
end
return out
