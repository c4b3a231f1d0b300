-- Creates a session unless the id is taken or tombstoned, or its deadline has come by Redis's clock.
-- KEYS[1] session, KEYS[2] tombstone. ARGV[1] the session (JSON), ARGV[2] its idle ttl (ms, timed by Redis's clock:
-- session-expiry.lua, in front of this file), or 'none': no expiry (a session without an idle ttl, moved by
-- regenerate); ARGV[3] its absolute deadline (epoch ms), which caps the expiry.
-- Returns, when created, the key's expiry (epoch ms by Redis's clock; 0: none); -2 when the id is taken; -1 when it
-- was destroyed recently (destroyAllForUser tombstones the ids of its user's index, including one whose session is
-- still on its way); minus Redis's TIME (epoch ms, so < -2) when the deadline has come by that clock: nothing
-- written. A key written so would be deleted at once (PXAT in Redis's past) or, with no idle ttl, outlive its
-- deadline: regenerate copying a session that the touching reads of an instance behind Redis's kept past it, or
-- create from such an instance with a maxAgeMs below the skew (the caller makes the deadline from that TIME then).
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('EXISTS', KEYS[1]) == 1 then return -2 end
local at = idleExpiry(ARGV[2] == 'none' and 0 or ARGV[2], ARGV[3])
-- (idleExpiry read TIME into redis_now_ms: a comparison, no command)
if tonumber(ARGV[3]) <= redis_now_ms then return -redis_now_ms end
if ARGV[2] == 'none' then
  redis.call('SET', KEYS[1], ARGV[1])
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', epochArg(at))
return at
