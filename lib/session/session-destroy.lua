-- Deletes a session and leaves a short tombstone so a late write cannot bring it back.
-- KEYS[1] session, KEYS[2] tombstone. ARGV[1] tombstone ms, ARGV[2] '1' to leave the tombstone even when the session
-- is absent (destroyAllForUser: an indexed id whose session is still being written must never be written after).
-- ARGV[3] (regenerate): the value the caller copied; when the session holds another now (an update came first),
-- nothing is deleted and -1 is returned, so the caller copies it again.
-- Returns the userId, or false when absent.
local raw = redis.call('GET', KEYS[1])
if not raw then
  if ARGV[2] == '1' then redis.call('SET', KEYS[2], '1', 'PX', ARGV[1]) end
  return false
end
if ARGV[3] and raw ~= ARGV[3] then return -1 end
-- the envelope is the text before the first line feed (changes appended by updates follow it: session-change.lua)
local ok, s = pcall(cjson.decode, string.match(raw, '^[^\n]*'))
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
if ok and type(s) == 'table' and type(s.u) == 'string' then return s.u end
return ''
