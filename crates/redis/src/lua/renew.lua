-- renew: extend the owner's lease (D4); never revives a run past its deadline.
-- ARGV[7] fence, ARGV[8] lease TTL ms. Returns {'ok', deadline} | not_owner's reply | epoch.
local k = key_context()
local refused = wrong_epoch(k.epoch, ARGV[1])
if refused then return refused end
local fence, ttl = ARGV[7], tonumber(ARGV[8])
local gone = not_owner(k, fence)
if gone then return gone end

local deadline = now_ms + ttl
redis.call('HSET', k.hash, 'd', num(deadline))
redis.call('ZADD', k.leases, num(deadline), k.member)
audit(k.audit, 'renew', k.member, fence, tonumber(redis.call('HGET', k.hash, 'q')),
  ',"d":' .. num(deadline))
return {'ok', num(deadline)}
