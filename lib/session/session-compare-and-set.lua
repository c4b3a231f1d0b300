-- Compare-and-sets of sessions, one or many in one call (the writes of one tick on a single server): each writes a
-- session only if it still holds exactly the value the caller read (the caller merged its change into that value, so
-- no concurrent update is lost). No JSON work here: the comparison is of two strings.
-- Write i: KEYS[2i-1] session, KEYS[2i] its tombstone. ARGV[3i-2] what the caller read: the stamp that value starts
-- with ('{"v":"/' and a token, up to its closing quote: a token stands for one write, see session.stamp.ts), else
-- the whole value, or '' for "no session": then the session is created, unless the id is tombstoned (destroyed
-- recently). ARGV[3i-1] the new value. ARGV[3i] the expiry: epoch ms (PXAT), 'keep' (the current expiry) or 'none'
-- (no expiry).
-- Returns one reply per write, in order: { 1, expiresAt } when written (expiresAt -1: none); { 0, current value }
-- when the session changed since the caller read it ({ 0 } when it is gone): merge into the current value and try
-- again; -1 when tombstoned; or the error of that write alone (redis.pcall: a key holding another type, or a write
-- refused for memory, fails only its own write, never the others).
local function failed(reply)
  return type(reply) == 'table' and reply.err ~= nil
end

local function compareAndSet(key, tombstone, expected, value, expiry)
  local cur
  if string.byte(expected, -1) == 34 and string.sub(expected, 1, 7) == '{"v":"/' then
    -- a stamp: only as many bytes are read (a whole value ends with '}', never with a quote)
    local head = redis.pcall('GETRANGE', key, 0, #expected - 1)
    if failed(head) then return head end
    if head ~= expected then
      cur = redis.call('GET', key)
      if not cur then return { 0 } end
      return { 0, cur }
    end
  else
    cur = redis.pcall('GET', key)
    if failed(cur) then return cur end
    if not cur then
      if expected ~= '' then return { 0 } end
      if redis.call('EXISTS', tombstone) == 1 then return -1 end
    elseif cur ~= expected then
      return { 0, cur }
    end
  end
  local written
  if expiry == 'keep' then
    written = redis.pcall('SET', key, value, 'KEEPTTL')
    if failed(written) then return written end
    return { 1, redis.call('PEXPIRETIME', key) }
  end
  if expiry == 'none' then
    written = redis.pcall('SET', key, value)
    if failed(written) then return written end
    return { 1, -1 }
  end
  written = redis.pcall('SET', key, value, 'PXAT', expiry)
  if failed(written) then return written end
  return { 1, tonumber(expiry) }
end

local out = {}
for i = 1, #KEYS / 2 do
  out[i] = compareAndSet(KEYS[2 * i - 1], KEYS[2 * i], ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i])
end
return out
