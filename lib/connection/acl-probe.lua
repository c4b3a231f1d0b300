-- Whether the ACL user running this script may run each command the toolkit needs, for servers without ACL DRYRUN
-- and redis.acl_check_cmd (Redis < 7): each command runs under redis.pcall on KEYS[1], a probe key of the toolkit's
-- own (`<prefix><feature>:{acl:check}`, which no caller's key can equal), deleted at the end. Channels are the
-- toolkit's internal probe channel, which nothing subscribes to.
-- ARGV: per command, its number of words n, then the command and its arguments (n words).
-- Returns, per command in order: 0 denied by the ACL, 2 unknown to the server (renamed or disabled with
-- rename-command), 1 anything else (it ran, or failed for another reason).
local out = {}
local a = 1
local function denied(err)
  local text = type(err) == 'table' and tostring(err.err) or tostring(err)
  -- Redis 6 and 7.0 in a script: "The user executing the script can't run this command or subcommand" / "can't
  -- access at least one of the keys" / "can't publish to the channel"; later versions: NOPERM.
  return string.find(text, 'NOPERM', 1, true) ~= nil
    or string.find(text, "user executing the script can't", 1, true) ~= nil
    or string.find(text, 'no permissions', 1, true) ~= nil
end
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  local reply = redis.pcall(unpack(ARGV, a + 1, a + n))
  if type(reply) == 'table' and reply.err ~= nil and denied(reply) then
    out[#out + 1] = 0
  elseif type(reply) == 'table' and reply.err ~= nil and string.find(reply.err, 'Unknown Redis command', 1, true) then
    out[#out + 1] = 2
  else
    out[#out + 1] = 1
  end
  a = a + 1 + n
end
redis.pcall('DEL', KEYS[1])
return out
