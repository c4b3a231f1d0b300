-- Updates of sessions, one or many in one call (the updates of one tick on a single server): each appends the fields
-- it changes to the session's value (APPEND), so concurrent updates never lose one another and no JSON is decoded or
-- compared; every few changes the caller sends the whole merged session instead, written only if the session still
-- holds exactly the value the caller knows (its compaction), else the change is appended as usual.
-- ARGV[1] the largest value in bytes: a change that would take the value past it is not kept (reply -2; the caller
-- merges and rewrites the session, see session.records.ts).
-- Write i: KEYS[i] session; ARGV[4i-2] the length in bytes of the value the caller knows, ARGV[4i-1] the change (a
-- line feed, then its JSON), ARGV[4i] the expiry: epoch ms (PEXPIREAT), 'keep' (the key keeps its expiry, which is
-- answered) or 'skip' (keeps it; the caller knows it: it set it less than a second ago), ARGV[4i+1] '' or, to write
-- the merged session whole, what the caller expects of the known value (its stamp and where it is, session-holds.lua),
-- a space, then that session: written only when the value is still the known one, else the change is appended.
-- Never creates a session: a change appended to an absent key (expired, destroyed) is deleted at once, in this
-- script, so a late update cannot bring it back.
-- Returns two values per write, flat (a table per write costs Redis more): first, when written and the value before
-- was as long as the known one, the new length (an append adds to the end: the known value is still in front, unless
-- another instance rewrote the session whole at exactly that length meanwhile: see session.records.ts); when written
-- over another value, the value now (this change included); nil when the session is gone; -2 when the change would
-- pass ARGV[1] (nothing kept); or the error of that write alone (redis.pcall: a key of another type, or a write
-- refused for memory, fails only its own write). Second, the key's expiry (epoch ms; 0: none; -1 with 'skip').
-- failed(reply): session-holds.lua, in front of this file

local function expiryAfter(key, expiry)
  if expiry == 'skip' then return -1 end
  if expiry == 'keep' then
    local at = redis.call('PEXPIRETIME', key)
    return at > 0 and at or 0
  end
  redis.call('PEXPIREAT', key, expiry)
  return tonumber(expiry)
end

local function change(key, length, text, expiry, whole, limit)
  if whole ~= '' then
    local space = string.find(whole, ' ', 1, true)
    local held = holds(key, string.sub(whole, 1, space - 1)) -- session-holds.lua, in front of this file
    if failed(held) then return held, 0 end
    if held then
      local json = string.sub(whole, space + 1)
      local written
      if expiry == 'skip' or expiry == 'keep' then
        written = redis.pcall('SET', key, json, 'KEEPTTL')
        if failed(written) then return written, 0 end
        return #json, expiryAfter(key, expiry)
      end
      written = redis.pcall('SET', key, json, 'PXAT', expiry)
      if failed(written) then return written, 0 end
      return #json, tonumber(expiry)
    end
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
  local at = expiryAfter(key, expiry)
  if size == tonumber(length) + #text then return size, at end
  return redis.call('GET', key), at
end

local limit = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local a = 4 * i - 2
  out[2 * i - 1], out[2 * i] = change(KEYS[i], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], limit)
end
return out
