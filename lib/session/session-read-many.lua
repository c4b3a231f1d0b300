-- The touching reads one process makes in the same tick on a single server, as one command: for each i, GETEX
-- KEYS[i] PX ttl, where ttl is ARGV[i], or ARGV[1] for every key when only one is given (they share it). Returns
-- each session's value in order (nil when absent), or the error of that key alone (redis.pcall: a key holding
-- another type fails only its own read, never the batch).
-- A last argument below 0 is the reply's budget in bytes, negated: Redis closes the connection of a reply past its
-- client-output-buffer-limit normal, so a value that would take the values answered past the budget is answered 0
-- instead (touched all the same), and the caller reads it in a call of its own; the first value is always answered.
local out = {}
local n = #ARGV
local budget = 0
if tonumber(ARGV[n]) < 0 then
  budget = -tonumber(ARGV[n])
  n = n - 1
end
local shared = n == 1
local total = 0
for i = 1, #KEYS do
  local value = redis.pcall('GETEX', KEYS[i], 'PX', shared and ARGV[1] or ARGV[i])
  if budget > 0 and type(value) == 'string' then
    if total > 0 and total + #value > budget then
      value = 0
    else
      total = total + #value
    end
  end
  out[i] = value
end
return out
