-- The publishes one process makes in one turn of its event loop, in order (one server, or any node of a cluster with
-- classic pub/sub: a node relays every message to the whole cluster): PUBLISH ARGV[2i-1] ARGV[2i] for each i. No keys.
-- Returns, per message, how many subscribers received it (on a cluster: those connected to the node that ran it), or
-- the error text of that message alone (redis.pcall: a channel the ACL user may not publish to fails only its own).
local out = {}
for i = 1, #ARGV / 2 do
  local n = redis.pcall('PUBLISH', ARGV[2 * i - 1], ARGV[2 * i])
  if type(n) == 'table' and n.err then
    out[i] = n.err
  else
    out[i] = n
  end
end
return out
