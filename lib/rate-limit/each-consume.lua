-- Put in front of the lean scripts (consume-fixed-window.lua, consume-sliding-window.lua; LuaScript.fromFile
-- preludes; consume-token-bucket.lua has its own loop): their one loop over a call's decisions, each the consume of
-- one policy, and ms().
-- KEYS per decision: its counter and its block key (same hash tag). ARGV per decision: 'c1', then the policy as for
-- consume.lua. `decide(counter, block key, policy)` answers one decision with five values: allAllowed, allowed,
-- remaining, resetMs, retryAfterMs (a failed decision: -1, the error text, 0, 0, 0, so it fails alone). Decided in
-- order; returns the answers one after another, five per decision.

local math_ceil = math.ceil
-- a reply's ms figure (resetMs, retryAfterMs) from µs
local function ms(us)
  return us > 0 and math_ceil(us / 1000) or 0
end

local function decide_each(algorithm, decide)
  if #ARGV ~= #KEYS then
    error('malformed ' .. algorithm .. ' consume: ' .. #KEYS .. ' keys, ' .. #ARGV .. ' values')
  end
  local out = {}
  for d = 1, #KEYS / 2 do
    if ARGV[2 * d - 1] ~= 'c1' then error('malformed ' .. algorithm .. ' consume: ' .. tostring(ARGV[2 * d - 1])) end
    local o = 5 * (d - 1)
    out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = decide(KEYS[2 * d - 1], KEYS[2 * d], ARGV[2 * d])
  end
  return out
end
