-- acquire: start a run if the key is idle (D1). ARGV[7] owner replica id, ARGV[8] lease TTL ms.
-- Returns {'ok', fence, seq, deadline} | {'busy', fence, owner} | {'epoch', current}.
local k = key_context()
local refused = wrong_epoch(k.epoch, ARGV[1])
if refused then return refused end
local owner, ttl = ARGV[7], tonumber(ARGV[8])

local s, f, q, o = unpack(redis.call('HMGET', k.hash, 's', 'f', 'q', 'o'))
if s == 'r' then
  if not reap(k, k.hash, k.channel, k.member) then
    return {'busy', f, o or ''}
  end
  -- The lease had run out: the key is idle with `Lost` now, in this same step.
  f, q = unpack(redis.call('HMGET', k.hash, 'f', 'q'))
end

-- Fences strictly increase per key, even across a data loss, as long as the server clock does
-- not step back: the larger of the next integer and the server's microseconds. A key with no
-- stored sequence (never run, expired, or lost) starts its sequence from the clock too.
local before = tonumber(q)
local fence = math.max((tonumber(f) or 0) + 1, now_us)
local seq = before and (before + 1) or now_us
local deadline = now_ms + ttl
redis.call('HSET', k.hash, 's', 'r', 'f', num(fence), 'q', num(seq), 'a', num(seq), 'o', owner,
  'd', num(deadline))
redis.call('HDEL', k.hash, 'p', 'x')
redis.call('PERSIST', k.hash)
redis.call('ZADD', k.leases, num(deadline), k.member)
redis.call('PUBLISH', k.channel, '{"f":' .. num(fence) .. ',"q":' .. num(seq) .. ',"b":'
  .. num(before or 0) .. ',"s":"r"}')
audit(k.audit, 'acquire', k.member, num(fence), seq,
  ',"o":' .. cjson.encode(owner) .. ',"d":' .. num(deadline))
return {'ok', num(fence), num(seq), num(deadline)}
