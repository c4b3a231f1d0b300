-- Creates a session unless the id is taken or tombstoned.
-- KEYS[1] session, KEYS[2] tombstone. ARGV[1] the session (JSON), ARGV[2] expiry (epoch ms), or 'none': no expiry (a
-- session without an idle ttl, moved by regenerate).
-- Returns 1 when created, 0 when the id is taken, -1 when it was destroyed recently (destroyAllForUser tombstones the
-- ids of its user's index, including one whose session is still on its way).
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[2] == 'none' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
end
return 1
