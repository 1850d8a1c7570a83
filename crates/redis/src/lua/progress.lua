-- progress: a batch of the owner's items, in order, each one transition (D2, D5); renews the
-- lease on the way. ARGV[7] fence, ARGV[8] lease TTL ms, ARGV[9] the sequence the owner last
-- wrote, ARGV[10..] the items (codec text). A retried batch that already got through (its
-- answer was lost) is recognised by the sequence and not applied twice.
-- Returns {'ok', last seq, deadline} | not_owner's reply | epoch.
local k = key_context()
local refused = wrong_epoch(k.epoch, ARGV[1])
if refused then return refused end
local fence, ttl, expected = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local gone = not_owner(k, fence)
if gone then return gone end

local n = #ARGV - 9
if n < 1 then
  return redis.error_reply('progress: no items')
end
local q = tonumber(redis.call('HGET', k.hash, 'q'))
local deadline = now_ms + ttl
if q == expected + n then
  -- This very batch was applied by an earlier attempt whose answer was lost: it only renews.
  redis.call('HSET', k.hash, 'd', num(deadline))
  redis.call('ZADD', k.leases, num(deadline), k.member)
  audit(k.audit, 'renew', k.member, fence, q, ',"d":' .. num(deadline))
  return {'ok', num(q), num(deadline)}
end
if q ~= expected then
  return redis.error_reply('progress: stored sequence ' .. num(q or -1) .. ', the owner expected '
    .. num(expected))
end
local first, last = q + 1, q + n
redis.call('HSET', k.hash, 'q', num(last), 'p', ARGV[#ARGV], 'd', num(deadline))
redis.call('ZADD', k.leases, num(deadline), k.member)
-- One message per batch; every item kept, item i has sequence first + i - 1.
redis.call('PUBLISH', k.channel, '{"f":' .. fence .. ',"q":' .. num(first) .. ',"s":"r","p":['
  .. table.concat(ARGV, ',', 10) .. ']}')
audit(k.audit, 'progress', k.member, fence, last, ',"n":' .. n .. ',"d":' .. num(deadline))
return {'ok', num(last), num(deadline)}
