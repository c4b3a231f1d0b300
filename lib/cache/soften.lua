-- Soft invalidation of one entry: its fresh-until becomes `now`, so readers see it as stale (served while one
-- refresh runs) until its stale horizon, which (with the key's TTL) is left unchanged.
-- Entry format: "<freshUntil>,<staleUntil>,<delta>,<tags json>\n<payload>", an `s` maybe after the tags json
-- (cache.entry.ts); everything after fresh-until is kept as it is.
-- KEYS[1] entry  ARGV[1] now (ms, Redis's clock as the caller estimates it: cache.clock.ts). Returns 1 when the
-- entry was fresh and is now stale, 0 otherwise.
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
local nl = string.find(value, '\n', 1, true)
if not nl then return 0 end
local fresh, rest = string.match(string.sub(value, 1, nl - 1), '^(%d+),(.*)$')
if not fresh then return 0 end
local now = tonumber(ARGV[1])
if tonumber(fresh) <= now then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ',' .. rest .. string.sub(value, nl), 'KEEPTTL')
return 1
