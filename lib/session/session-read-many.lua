-- The touching reads one process makes in the same tick on a single server, as one command: for each i, GETEX
-- KEYS[i] PX ttl, where ttl is ARGV[i], or ARGV[1] for every key when only one is given (they share it). Returns
-- each session's value in order (nil when absent), or the error of that key alone (redis.pcall: a key holding
-- another type fails only its own read, never the batch).
local out = {}
local shared = #ARGV == 1
for i = 1, #KEYS do
  out[i] = redis.pcall('GETEX', KEYS[i], 'PX', shared and ARGV[1] or ARGV[i])
end
return out
