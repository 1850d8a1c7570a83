-- progress: a batch of the owner's items, in order, each one transition (D2, D5); renews the
-- lease on the way. ARGV[7] fence, ARGV[8] lease TTL ms, ARGV[9] the sequence the owner last
-- wrote, ARGV[10] 'p' (the items are snapshots) or 'd' (deltas), ARGV[11] the progress to store
-- (the last snapshot, or everything accumulated), ARGV[12..] the items (codec text). A retried
-- batch that already got through (its answer was lost) is recognised by the sequence and not
-- applied twice. Returns {'ok', last seq, deadline} | not_owner's reply | epoch.
local k = key_context()
local refused = wrong_epoch(k.epoch, ARGV[1])
if refused then return refused end
local fence, ttl, expected = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local gone = not_owner(k, fence)
if gone then return gone end

local n = #ARGV - 11
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
redis.call('HSET', k.hash, 'q', num(last), 'p', ARGV[11], 'd', num(deadline))
redis.call('ZADD', k.leases, num(deadline), k.member)
publish_items(k, fence, first, ARGV[10], ARGV[11], 12)
audit(k.audit, 'progress', k.member, fence, last, ',"n":' .. n .. ',"d":' .. num(deadline))
return {'ok', num(last), num(deadline)}
