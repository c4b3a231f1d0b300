-- Count the unexpired holders of a semaphore (Semaphore.holders): the holders set is scored by expiry in the
-- server's time (semaphore-acquire.lua), so it is counted against the server's clock (TIME), not the app's: an app
-- whose clock is ahead counted none, one behind counted holders that had expired.
-- KEYS[1] holders. Returns the count.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
