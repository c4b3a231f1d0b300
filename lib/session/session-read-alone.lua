-- A session read alone under the reply budget of its connection (reply-budget.ts, session.single-reads.ts: a read
-- without rolling, the GET of a session a write has not seen): its value and PEXPIRETIME, as the MULTI sent without a
-- budget answers them, or, when the value with ARGV[2] bytes of framing would take the reply past ARGV[1] bytes, its
-- length instead (an integer): the caller reads it again once the budget has room for that length. STRLEN before
-- GET: a value left out is never copied into the reply. A key of another type fails the call (WRONGTYPE), as GET does.
local n = redis.call('STRLEN', KEYS[1])
if n > 0 and n + tonumber(ARGV[2]) > tonumber(ARGV[1]) then return n end
return { redis.call('GET', KEYS[1]), redis.call('PEXPIRETIME', KEYS[1]) }
