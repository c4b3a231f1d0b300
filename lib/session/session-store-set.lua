-- express-session Store#set: replaces the session's data, creating it if needed, unless the id is tombstoned.
-- Keeps createdAt and the absolute deadline of an existing session.
-- KEYS[1] session, KEYS[2] tombstone.
-- ARGV[1] Redis's now as the caller estimates it (epoch ms: a new session's createdAt, and its deadline after
-- maxAgeMs; the caller indexed the session with that deadline), ARGV[2] maxAgeMs,
-- ARGV[3] idle ttl (0: no Redis expiry, the store's disableTTL), ARGV[4] the new session as a JSON object without c
-- and m, ARGV[5] its userId when the caller has not put the id in that user's index yet, else ''.
-- Returns -1 when tombstoned; { previous userId or '', deadline, 'unindexed' } without writing anything when the
-- session would get a new owner (ARGV[5]) that has not indexed it yet (index it with that deadline, then call again
-- with ARGV[5] = '': destroyAllForUser reads the index, so the index entry must come first); else
-- { previous userId or '', expiresAt } (epoch ms by Redis's clock: the idle ttl is timed by it, never by the caller's,
-- which may run behind or ahead of it).
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local now = tonumber(ARGV[1])
local created, deadline
local previous = ''
-- the absolute deadline is judged by Redis's clock (TIME), as key expiry is: the caller's may run ahead
local redis_now = redisNowMs() -- session-expiry.lua, in front of this file
local raw = redis.call('GET', KEYS[1])
if raw then
  -- the envelope: the text before the first line feed (changes appended by updates follow it: session-change.lua)
  local old = cjson.decode(string.match(raw, '^[^\n]*'))
  if old.m > redis_now then
    created = old.c
    deadline = old.m
    if type(old.u) == 'string' then previous = old.u end
  end
end
if not created then
  created = now
  deadline = now + tonumber(ARGV[2])
end
if ARGV[5] ~= '' and previous ~= ARGV[5] then return { previous, deadline, 'unindexed' } end
-- c and m go in front of the caller's JSON object: no decode/encode of the new session.
local body = string.sub(ARGV[4], 2)
if body ~= '}' then body = ',' .. body end
local json = '{"c":' .. string.format('%d', created) .. ',"m":' .. string.format('%d', deadline) .. body
if tonumber(ARGV[3]) == 0 then
  redis.call('SET', KEYS[1], json)
  return { previous, deadline }
end
local exp = idleExpiry(ARGV[3], deadline)
redis.call('SET', KEYS[1], json, 'PXAT', epochArg(exp))
return { previous, exp }
