-- The expiry of a session key corrected with no value in the reply (session.retouch.ts; used only under a reply
-- budget: without one the GETEX commands are sent themselves, and their replies carry the session). ARGV[1]
-- 'persist' (GETEX PERSIST: no expiry), an idle ttl in ms (GETEX PX, timed by Redis's clock) or '' (neither);
-- ARGV[2] '' or the absolute deadline (epoch ms) the expiry is capped at (PEXPIREAT LT). GETEX rather than PERSIST
-- or PEXPIRE: the commands the startup ACL check asks for. Returns the key's PEXPIRETIME after (-2: gone).
if ARGV[1] == 'persist' then
  redis.call('GETEX', KEYS[1], 'PERSIST')
elseif ARGV[1] ~= '' then
  redis.call('GETEX', KEYS[1], 'PX', ARGV[1])
end
if ARGV[2] ~= '' then redis.call('PEXPIREAT', KEYS[1], ARGV[2], 'LT') end
return redis.call('PEXPIRETIME', KEYS[1])
