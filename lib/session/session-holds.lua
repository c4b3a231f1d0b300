-- Shared by the session scripts that write only over the value a caller read (lua-script.ts puts this file in front
-- of each): whether a session key still holds that value, told by what the caller expects when the value is stamped
-- (session.stamp.ts's expectedOf), without reading the value itself.
-- - '"v":"/<token>"}': the stamp this version writes as the session's last field. The value's last bytes, one
--   GETRANGE from the end: the stamp is there only if the session is still that value with nothing appended to it (a
--   change appended by session-change.lua ends with '}}' or ']}', never with the stamp's '"}').
-- - '"v":"/<token>"}@<end>:<length>': the same with changes appended: the stamp where the session's JSON ends, and
--   the value's length.
-- - '{"v":"/<token>"<length>': the stamp an earlier version wrote at the head, and the length.
-- Returns true or false (a missing key: false), the error reply of a key of another type, or nil when `expected` is
-- no stamp (the caller compares the whole value).

-- Whether a redis.pcall reply is an error reply (a key of another type, a write refused for memory).
local function failed(reply)
  return type(reply) == 'table' and reply.err ~= nil
end

local function holds(key, expected)
  if string.byte(expected, 1) == 34 then
    if string.byte(expected, -1) == 125 then
      local got = redis.pcall('GETRANGE', key, -#expected, -1)
      if failed(got) then return got end
      return got == expected
    end
    local at = string.find(expected, '}@', 7, true)
    if not at then return nil end
    local stamp = string.sub(expected, 1, at)
    local colon = string.find(expected, ':', at + 2, true)
    local stamp_end = tonumber(string.sub(expected, at + 2, colon - 1))
    local size = redis.pcall('STRLEN', key)
    if failed(size) then return size end
    return size == tonumber(string.sub(expected, colon + 1))
      and redis.call('GETRANGE', key, stamp_end - #stamp, stamp_end - 1) == stamp
  end
  local head, head_length = string.match(expected, '^({"v":"/[^"]*")(%d+)$')
  if head then
    local size = redis.pcall('STRLEN', key)
    if failed(size) then return size end
    return size == tonumber(head_length) and redis.call('GETRANGE', key, 0, #head - 1) == head
  end
  return nil
end
