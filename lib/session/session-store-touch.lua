-- express-session Store#touch: gives an existing session a new idle ttl (the cookie's maxAge may have changed on an
-- otherwise unmodified session) and stores the cookie it was touched with; never creates one.
-- KEYS[1] session. ARGV[1] new idle ttl (ms), ARGV[2] the cookie as JSON, or '' to keep it.
-- Returns 0 when absent or past its absolute deadline (by Redis's clock), else the new expiry (epoch ms by Redis's
-- clock: the idle ttl is timed by Redis's clock, never the caller's, which may run behind or ahead of it).
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
-- the envelope is the text before the first line feed; the changes appended to it by updates (session-change.lua)
-- are kept as they are, behind the envelope written again
local changes_at = string.find(raw, '\n', 1, true)
local changes = changes_at and string.sub(raw, changes_at) or ''
local s = cjson.decode(changes_at and string.sub(raw, 1, changes_at - 1) or raw)
-- the absolute deadline is judged by Redis's clock (TIME), as key expiry is: the caller's may run ahead
local redis_now = redisNowMs() -- session-expiry.lua, in front of this file
if s.m <= redis_now then
  redis.call('DEL', KEYS[1])
  return 0
end
s.t = tonumber(ARGV[1])
if ARGV[2] ~= '' then s.k = ARGV[2] end
if type(s.d) ~= 'table' or next(s.d) == nil then s.d = cjson.decode('{}') end
-- the stamp stood for the value read; the value written here has none (see session.stamp.ts)
s.v = nil
local exp = idleExpiry(s.t, s.m)
redis.call('SET', KEYS[1], cjson.encode(s) .. changes, 'PXAT', epochArg(exp))
return exp
