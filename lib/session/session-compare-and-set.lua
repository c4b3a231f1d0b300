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
-- failed(reply), holds and heldIn: session-holds.lua, idleExpiry and epochArg: session-expiry.lua, both in front of
-- this file

-- Puts back `cur`, the value a lost race's SET … GET replaced, byte for byte, with the expiry a touching read of it
-- gives: its own idle ttl from now, capped by its own deadline (its `t` and `m`, which may not be the ones of the value
-- the caller read: express-session's set of the id since, with another cookie maxAge, or with disableTTL), or none when
-- it has no idle ttl (t 0: as it was; KEEPTTL, which the caller's next try of such a session writes with, then keeps
-- none, where the caller's ttl stayed). The first version (6204922) gave it the caller's ttl and deadline: a
-- disableTTL session updated so kept an idle expiry, and a write refused after it (SessionTooLargeError) still cut a
-- 2 h session to the caller's 1 h. Its deadline come by Redis's clock: deleted, answered "gone" (false), as the caller
-- would have it deleted on reading it. `t` and `m` are read from the text: a top-level number, since every other value
-- a session holds is a string (data fields are serialized text, the cookie JSON) and a JSON string never holds `"m":`
-- (its quotes are escaped); a value where they cannot be read (not one this toolkit wrote) gets the caller's expiry,
-- `pxat`.
-- Returns what the caller is answered.
local function putBack(key, cur, pxat)
  local t = tonumber(string.match(cur, '"t":([%d%.eE%+%-]+)'))
  local m = tonumber(string.match(cur, '"m":([%d%.eE%+%-]+)'))
  if t == nil or m == nil or t < 0 then
    redis.call('SET', key, cur, 'PXAT', pxat)
    return cur
  end
  if t == 0 then
    if m <= redisNowMs() then
      redis.call('DEL', key)
      return false
    end
    redis.call('SET', key, cur)
    return cur
  end
  local at, over = idleExpiry(t, m)
  if over then
    redis.call('DEL', key)
    return false
  end
  redis.call('SET', key, cur, 'PXAT', epochArg(at))
  return cur
end

local function compareAndSet(key, tombstone, expected, value, expiry, deadline)
  local cur
  -- The common write (a session the caller read, given an idle expiry whose deadline has not come) in one command:
  -- SET … XX GET writes and answers what it replaced, and the comparison is made on that. A redis.call costs Redis 7.0
  -- well beyond its command (docs/session.md, *Update, 2026-12-06*): a GETRANGE then a SET cost 11.2 µs of Redis CPU
  -- per write there, this 8.9.
  -- A lost race puts back what was there, in the same script, so no one ever sees it replaced: its value byte for
  -- byte, with the expiry a touching read of it would give (putBack, above), not the one it had.
  if expected ~= '' and expiry ~= 'keep' and expiry ~= 'none' then
    local at, over = idleExpiry(expiry, deadline)
    if not over then
      local pxat = epochArg(at)
      -- XX: a session that is gone is not made again (nil: answered as "gone", false in the reply)
      cur = redis.pcall('SET', key, value, 'XX', 'PXAT', pxat, 'GET')
      if failed(cur) then return cur end
      if not cur then return false end
      if heldIn(cur, expected) then return at end
      return putBack(key, cur, pxat)
    end
  end
  local held = holds(key, expected) -- session-holds.lua, in front of this file
  if held ~= nil then
    if failed(held) then return held end
    -- (a missing key reads as false, which is nil in the reply: a Lua nil would end the reply table here)
    if not held then return redis.call('GET', key) end
  else
    cur = redis.pcall('GET', key)
    if failed(cur) then return cur end
    if not cur then
      if expected ~= '' then return false end
      if redis.call('EXISTS', tombstone) == 1 then return -1 end
    elseif cur ~= expected then
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
