-- Owner-checked release of the cache's stampede lock: delete KEYS[1] only while it still holds our token ARGV[1].
-- Returns 1 when released, 0 when the lock had expired or belongs to another process.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
