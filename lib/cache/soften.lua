-- Soft invalidation of one entry: its fresh-until becomes 0 (the epoch), so readers see it as stale (served while one
-- refresh runs) until its stale horizon, which (with the key's TTL) is left unchanged. 0 and not the caller's `now`:
-- every instance compares with its own estimate of Redis's clock, and two estimates differ by up to a few ms (more on
-- a busy box: each is off by at most half its sample's round trip, cache.clock.ts); an instance whose estimate lagged
-- the invalidating one's served the entry as a fresh hit, with no refresh, until its estimate passed that `now`
-- (test/cache/cache.clock-skew.spec.ts). An entry already stale by the caller's `now` is set to 0 too (a lagging
-- instance may still hold it fresh, in its L1 as well), but not counted.
-- Entry format: "<freshUntil>,<staleUntil>,<delta>,<tags json>\n<payload>", an `s` maybe after the tags json
-- (cache.entry.ts); everything after fresh-until is kept as it is.
-- KEYS[1] entry  ARGV[1] now (ms, Redis's clock as the caller estimates it: cache.clock.ts). Returns 1 when the
-- entry was fresh by that `now` and is now stale, 0 otherwise.
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
local nl = string.find(value, '\n', 1, true)
if not nl then return 0 end
local fresh, rest = string.match(string.sub(value, 1, nl - 1), '^(%d+),(.*)$')
if not fresh then return 0 end
fresh = tonumber(fresh)
if fresh == 0 then return 0 end
redis.call('SET', KEYS[1], '0,' .. rest .. string.sub(value, nl), 'KEEPTTL')
if fresh <= tonumber(ARGV[1]) then return 0 end
return 1
