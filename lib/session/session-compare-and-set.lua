-- Writes a session only if it still holds exactly the value the caller read (a compare-and-set: the caller merged
-- its change into that value, so no concurrent update is lost). No JSON work here: the comparison is of two strings.
-- KEYS[1] session, KEYS[2] tombstone. ARGV[1] what the caller read: the stamp that value starts with ('{"v":"/' and a
-- token, up to its closing quote: a token stands for one write, see session.stamp.ts), else the whole value, or ''
-- for "no session": then the session is created, unless the id is tombstoned (destroyed recently). ARGV[2] the new
-- value. ARGV[3] the expiry: epoch ms (PXAT), 'keep' (the current expiry) or 'none' (no expiry).
-- Returns { 1, expiresAt } when written (expiresAt -1: none); { 0, current value } when the session changed since
-- the caller read it ({ 0 } when it is gone): merge into the current value and try again; -1 when tombstoned.
local expected = ARGV[1]
if string.byte(expected, -1) == 34 and string.sub(expected, 1, 7) == '{"v":"/' then
  -- a stamp: only as many bytes are read (a whole value ends with '}', never with a quote)
  if redis.call('GETRANGE', KEYS[1], 0, #expected - 1) ~= expected then
    local cur = redis.call('GET', KEYS[1])
    if not cur then return { 0 } end
    return { 0, cur }
  end
else
  local cur = redis.call('GET', KEYS[1])
  if not cur then
    if expected ~= '' then return { 0 } end
    if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
  elseif cur ~= expected then
    return { 0, cur }
  end
end
if ARGV[3] == 'keep' then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return { 1, redis.call('PEXPIRETIME', KEYS[1]) }
end
if ARGV[3] == 'none' then
  redis.call('SET', KEYS[1], ARGV[2])
  return { 1, -1 }
end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
return { 1, tonumber(ARGV[3]) }
