-- The GETs of one batch under a reply budget (reply-budget.ts): for each key in order, its value (nil when absent,
-- and nil for a key holding another type, as MGET answers), or, when its value would take the reply past ARGV[1]
-- bytes (each value counted with ARGV[2] bytes of framing), its length instead (an integer): the caller reads it
-- again when the budget has room for it. STRLEN before GET: a value left out is never copied into the reply.
local budget = tonumber(ARGV[1])
local overhead = tonumber(ARGV[2])
local total = 0
local out = {}
for i = 1, #KEYS do
  local n = redis.pcall('STRLEN', KEYS[i])
  if type(n) ~= 'number' then
    out[i] = false
  elseif n == 0 then
    -- absent (or empty): a few bytes, never left out
    out[i] = redis.call('GET', KEYS[i])
  elseif total + n + overhead > budget then
    out[i] = n
  else
    total = total + n + overhead
    out[i] = redis.call('GET', KEYS[i])
  end
end
return out
