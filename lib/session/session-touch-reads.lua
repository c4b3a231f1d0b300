-- The touching reads of several sessions, batched from one tick of one process: for each session key KEYS[i],
-- GETEX KEYS[i] PX ARGV[i] (read it and extend its idle expiry). Returns the values in order (nil for a session that
-- is not there, an error element for a key of another type: redis.pcall, so one bad key fails only its own read).
-- Single server only: the keys belong to different sessions, so different hash slots.
local out = {}
for i = 1, #KEYS do
  out[i] = redis.pcall('GETEX', KEYS[i], 'PX', ARGV[i])
end
return out
