-- Whether the ACL user running this script may run each command the toolkit needs, with its keys and channels
-- (redis.acl_check_cmd, Redis >= 7: a check, nothing runs). No keys: it reads and writes nothing.
-- ARGV: per command, its number of words n, then the command and its arguments (n words).
-- Returns, per command in order: 1 allowed, 0 denied, or the error text (an unknown command).
local out = {}
local a = 1
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  local ok, allowed = pcall(redis.acl_check_cmd, unpack(ARGV, a + 1, a + n))
  if not ok then
    out[#out + 1] = type(allowed) == 'table' and tostring(allowed.err) or tostring(allowed)
  else
    out[#out + 1] = allowed and 1 or 0
  end
  a = a + 1 + n
end
return out
