-- running: the keys whose lease is live now, cluster-wide. KEYS = epoch, leases.
-- Returns {epoch, member...}.
local epoch = redis.call('GET', KEYS[1])
local live_keys = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. num(now_ms), '+inf')
table.insert(live_keys, 1, epoch or '')
return live_keys
