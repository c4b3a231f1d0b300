-- The touching reads one process makes in the same tick on a single server, as one command: for each i, GETEX
-- KEYS[i] PX ttl, where ttl is ARGV[i], or ARGV[1] for every key when only one is given (they share it). Returns
-- each session's value in order (nil when absent), or the error of that key alone (redis.pcall: a key holding
-- another type fails only its own read, never the batch).
-- A last argument below 0 is the reply's budget in bytes, negated (reply-budget.ts): Redis closes the connection when
-- the replies it holds pass its client-output-buffer-limit normal, so a value that would take the values answered
-- past the budget (each counted with 64 bytes of framing, REPLY_OVERHEAD) is answered with its length instead (an
-- integer; touched all the same), and the caller reads it again when its connection's budget has room for it.
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
    if total + #value + 64 > budget then
      value = #value
    else
      total = total + #value + 64
    end
  end
  out[i] = value
end
return out
