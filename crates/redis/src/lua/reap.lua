-- reap: end every run whose lease ran out as `Lost` (D4). Run by every replica every TTL/4;
-- idempotent, and each key is re-checked against its own hash before it is touched.
-- KEYS = epoch, leases, audit. ARGV[1] epoch, ARGV[2] hash prefix, ARGV[3] channel prefix,
-- ARGV[4] control channel prefix, ARGV[5] the encoded `Lost` outcome, ARGV[6] retention ms,
-- ARGV[7] the most keys to reap in one call. Returns {'ok', reaped}.
local refused = wrong_epoch(KEYS[1], ARGV[1])
if refused then return refused end
local k = {
  epoch = KEYS[1], leases = KEYS[2], audit = KEYS[3],
  control = ARGV[4], lost = ARGV[5], retention = ARGV[6],
}
-- Whether `hash` has this crate's layout, as far as reaping it goes: a hash, and when running, a
-- fence and a sequence that are numbers.
local function reapable(hash)
  if redis.call('TYPE', hash)['ok'] ~= 'hash' then
    return false
  end
  local s, f, q = unpack(redis.call('HMGET', hash, 's', 'f', 'q'))
  return s ~= 'r' or (tonumber(f) ~= nil and tonumber(q) ~= nil)
end

local due = redis.call('ZRANGEBYSCORE', k.leases, '-inf', num(now_ms), 'LIMIT', 0,
  tonumber(ARGV[7]))
local reaped = 0
for _, member in ipairs(due) do
  local hash = ARGV[2] .. member
  if not reapable(hash) then
    -- Nothing of ours to reap (the hash expired or was lost), or foreign or corrupt data that
    -- would fail this whole call, every time, for every key: drop the lease entry. Reading or
    -- running the key still reports the data (a typed error).
    redis.call('ZREM', k.leases, member)
  elseif reap(k, hash, ARGV[3] .. member, member) then
    reaped = reaped + 1
  elseif redis.call('HGET', hash, 's') ~= 'r' then
    -- A lease entry whose key is not running: drop it.
    redis.call('ZREM', k.leases, member)
  end
end
return {'ok', num(reaped)}
