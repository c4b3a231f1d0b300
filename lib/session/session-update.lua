-- Atomic merge into an existing session; never creates one (an expired or destroyed session stays gone).
-- KEYS[1] session. ARGV[1] touch ('1'/'0'), ARGV[2] largest session in bytes, ARGV[3] number of field/value pairs to
-- set, then those pairs (values are serialized strings), then names of fields to delete.
-- Returns false when absent or past its absolute deadline (by Redis's clock), -1 when the merged session would be
-- larger than ARGV[2] (nothing written), else { session JSON, expiresAt } (epoch ms by Redis's clock; -1: the key has
-- no expiry). The touch's expiry is timed by Redis's clock too, as the deadline is judged: the caller's clock may run
-- behind or ahead of it (an expiry from a clock an hour behind deleted the session it extended).
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
-- the envelope is the text before the first line feed, then each change appended by an update (session-change.lua),
-- applied in order
local changes_at = string.find(raw, '\n', 1, true)
local s = cjson.decode(changes_at and string.sub(raw, 1, changes_at - 1) or raw)
-- the absolute deadline is judged by Redis's clock (TIME), as key expiry is: the caller's may run ahead
local redis_now = redisNowMs() -- session-expiry.lua, in front of this file
if s.m <= redis_now then
  redis.call('DEL', KEYS[1])
  return false
end
if type(s.d) ~= 'table' then s.d = {} end
if changes_at then
  for text in string.gmatch(string.sub(raw, changes_at + 1), '[^\n]+') do
    local change = cjson.decode(text)
    if type(change.d) == 'table' then
      for name, value in pairs(change.d) do s.d[name] = value end
    end
    if type(change.x) == 'table' then
      for _, name in ipairs(change.x) do s.d[name] = nil end
    end
  end
end
local sets = tonumber(ARGV[3])
local last = 3 + sets * 2
for i = 4, last, 2 do
  s.d[ARGV[i]] = ARGV[i + 1]
end
for i = last + 1, #ARGV do
  s.d[ARGV[i]] = nil
end
if next(s.d) == nil then s.d = cjson.decode('{}') end
-- the stamp stood for the value read; the value written here has none (see session.stamp.ts)
s.v = nil
local out = cjson.encode(s)
if #out > tonumber(ARGV[2]) then return -1 end
local exp
-- t 0: no idle ttl (RedisSessionStore's disableTTL), the key keeps no expiry even when touched
if ARGV[1] == '1' and s.t ~= 0 then
  exp = idleExpiry(s.t, s.m)
  redis.call('SET', KEYS[1], out, 'PXAT', epochArg(exp))
else
  exp = redis.call('PEXPIRETIME', KEYS[1])
  redis.call('SET', KEYS[1], out, 'KEEPTTL')
end
return { out, exp }
