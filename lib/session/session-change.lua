-- Updates of sessions, one or many in one call (the updates of one tick on a single server): each appends the fields
-- it changes to the session's value (APPEND), so concurrent updates never lose one another and no JSON is decoded or
-- compared; every few changes the caller sends the whole merged session instead (its compaction), written when the
-- value still begins with the value the caller knows (rewritten, see heldUpTo), else the change is appended as usual.
-- ARGV[1] the largest value in bytes: a change that would take the value past it is not kept (reply -2; the caller
-- merges and rewrites the session, see session.records.ts).
-- Write i: KEYS[i] session; ARGV[5i-3] the length in bytes of the value the caller knows, ARGV[5i-2] the change (a
-- line feed, then its JSON), ARGV[5i-1] the expiry: the idle ttl (ms, timed by Redis's clock: session-expiry.lua),
-- 'keep' (the key keeps its expiry, which is answered) or 'skip' (keeps it; the caller knows it: it set it less than
-- a second ago), ARGV[5i] the session's absolute deadline (epoch ms), which caps the idle expiry, ARGV[5i+1] '' or,
-- to write the merged session whole, what the caller expects of the known value (its stamp and where it is,
-- session-holds.lua), a space, then that session: written only when the value is still the known one, else the
-- change is appended.
-- Never creates a session: a change appended to an absent key (expired, destroyed) is deleted at once, in this
-- script, so a late update cannot bring it back.
-- Returns two values per write, flat (a table per write costs Redis more): first, the new length when the value now is
-- the known one with this change (appended, the value before as long as the known one: unless another instance
-- rewrote the session whole at exactly that length meanwhile, see session.appends.ts; or the merged session written
-- over exactly the known value); the value now (this change included) when anything else was there, and always when
-- a rewrite asked for was refused (so the caller's next one is made from what is there); nil when the session is
-- gone (also when its deadline has come by Redis's clock: then the key is deleted); -2 when the change would pass
-- ARGV[1] (nothing kept); or the error of that write alone (redis.pcall: a key of another type, or a write refused
-- for memory, fails only its own write). Second, the key's expiry (epoch ms by Redis's clock; 0: none; -1 with
-- 'skip').
-- A last argument past the writes' ('lean', sent under a reply budget: reply-budget.ts): where the first value
-- would be the value now, it is -3 instead and the caller reads that value under the budget (the updates of one tick
-- go in one call: values answered whole passed the server's client-output-buffer-limit normal together).
-- failed(reply): session-holds.lua, idleExpiry and epochArg: session-expiry.lua, both in front of this file

-- A session whose deadline has come by Redis's clock, though the caller's (behind it) had not seen it: over, as if
-- Redis had expired it. Its key (kept past the deadline by that caller's touching reads) is deleted, and the write
-- answers "gone", never the expiry of a key it deleted.
local function overDeadline(key)
  redis.call('DEL', key)
  return false, 0
end

-- The key's expiry after this write (set here for an idle ttl), or false when the deadline has come (overDeadline).
local function expiryAfter(key, expiry, deadline)
  if expiry == 'skip' then return -1 end
  if expiry == 'keep' then
    local at = redis.call('PEXPIRETIME', key)
    return at > 0 and at or 0
  end
  local at, over = idleExpiry(expiry, deadline)
  if over then return false end -- the deadline has come by Redis's clock: the caller deletes the session
  redis.call('PEXPIREAT', key, epochArg(at))
  return at
end

-- Whether the session still begins with the value the caller knows (`expected`: what session.stamp.ts's expectedOf
-- made of it, `length` its length in bytes): its stamp where the caller saw it, and the value at least that long. An
-- update only appends and every other write drops the stamp (or writes a new one), so what follows it is changes
-- appended since, by any instance. Returns the known length and the value's length; false; the error reply of a key
-- of another type; or nil for a value without a stamp (compared whole: holds, session-holds.lua).
local function heldUpTo(key, expected, length)
  local stamp_end, head = length, nil
  if string.byte(expected, 1) == 34 and string.byte(expected, -1) ~= 125 then
    local at = string.find(expected, '}@', 7, true)
    if not at then return nil end
    local colon = string.find(expected, ':', at + 2, true)
    stamp_end, length = tonumber(string.sub(expected, at + 2, colon - 1)), tonumber(string.sub(expected, colon + 1))
    expected = string.sub(expected, 1, at)
  elseif string.byte(expected, 1) ~= 34 then
    head = string.match(expected, '^({"v":"/[^"]*")%d+$')
    if not head then
      local held = holds(key, expected)
      if held then return length, length end
      return held
    end
    expected, stamp_end = head, #head
  end
  local size = redis.pcall('STRLEN', key)
  if failed(size) then return size end
  if size < length or redis.call('GETRANGE', key, stamp_end - #expected, stamp_end - 1) ~= expected then return false end
  return length, size
end

local lean = #ARGV > 1 + 5 * #KEYS

local function change(key, length, text, expiry, deadline, whole, limit)
  length = tonumber(length)
  local refused = false
  if whole ~= '' then
    local space = string.find(whole, ' ', 1, true)
    local known, size = heldUpTo(key, string.sub(whole, 1, space - 1), length)
    if failed(known) then return known, 0 end
    if known then
      -- changes appended since by others go behind the merged session, then this change again (a change sets or
      -- deletes fields: applied twice it gives the same), so a field set by both ends as this later write set it
      local value = string.sub(whole, space + 1)
      if size > known then value = value .. redis.call('GETRANGE', key, known, -1) .. text end
      if #value > limit then return -2, 0 end
      local written, at
      if expiry == 'skip' or expiry == 'keep' then
        written = redis.pcall('SET', key, value, 'KEEPTTL')
        if failed(written) then return written, 0 end
        at = expiryAfter(key, expiry, deadline)
      else
        local over
        at, over = idleExpiry(expiry, deadline)
        if over then return overDeadline(key) end
        written = redis.pcall('SET', key, value, 'PXAT', epochArg(at))
        if failed(written) then return written, 0 end
      end
      if size > known then
        if lean then return -3, at end
        return value, at
      end
      return #value, at
    end
    refused = true
  end
  local size = redis.pcall('APPEND', key, text)
  if failed(size) then return size, 0 end
  if size == #text then -- the key was absent: the session is gone, and stays gone
    local deleted = redis.pcall('DEL', key)
    if failed(deleted) then return deleted, 0 end
    return false, 0
  end
  if size > limit then -- undone: the value as it was, its expiry kept
    local undone = redis.pcall('SET', key, redis.call('GETRANGE', key, 0, size - #text - 1), 'KEEPTTL')
    if failed(undone) then return undone, 0 end
    return -2, 0
  end
  local at = expiryAfter(key, expiry, deadline)
  if not at then return overDeadline(key) end
  if not refused and size == length + #text then return size, at end
  if lean then return -3, at end
  return redis.call('GET', key), at
end

local limit = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local a = 5 * i - 3
  out[2 * i - 1], out[2 * i] = change(KEYS[i], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], limit)
end
return out
