-- Shared by every transition script (prepended to each, after `local AUDIT = true|false`).
--
-- Layout (docs/distributed.md, "Redis key layout"): per key a hash with fields
--   s  'r' running | 'i' idle          f  fence of the key's current or last run
--   q  sequence of the last transition a  sequence at which that run started
--   o  owner replica id (running only) d  lease deadline, server ms (running only)
--   p  progress: the last snapshot, or the deltas accumulated (codec text)
--   x  last outcome (codec text, idle only)
-- plus one sorted set of lease deadlines, one epoch string and (feature `audit`) one audit list.
--
-- Numbers are Lua doubles: exact up to 2^53 (server microseconds are ~1.8e15), but `tostring` and
-- `..` print 14 digits, so every number written or published goes through `num`.

local time = redis.call('TIME')
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
local now_ms = math.floor(now_us / 1000)

local function num(n)
  return string.format('%.0f', n)
end

-- Every script but `read` and `hello` refuses to act for a replica that does not know the
-- current epoch: after a data loss (a restart without persistence) no old owner writes anything.
local function wrong_epoch(epoch_key, expected)
  local epoch = redis.call('GET', epoch_key)
  if epoch ~= expected then
    return {'epoch', epoch or ''}
  end
  return nil
end

-- Appends one accepted write to the audit list (feature `audit`): the fault suite's ground truth.
local function audit(audit_key, op, member, fence, seq, extra)
  if AUDIT then
    redis.call('RPUSH', audit_key, '{"t":' .. num(now_us) .. ',"op":"' .. op .. '","key":'
      .. cjson.encode(member) .. ',"f":' .. fence .. ',"q":' .. num(seq) .. (extra or '') .. '}')
  end
end

-- Whether a lease deadline (server ms, as stored) is still ahead of the server clock.
local function live(deadline)
  local d = tonumber(deadline)
  return d ~= nil and now_ms < d
end

-- The per-call context of the key scripts: KEYS = epoch, hash, leases, audit; ARGV = epoch,
-- channel, lease member (the encoded key), control channel prefix, the encoded `Lost` outcome,
-- retention of idle keys (ms), then the script's own arguments from ARGV[7].
local function key_context()
  return {
    epoch = KEYS[1], hash = KEYS[2], leases = KEYS[3], audit = KEYS[4],
    channel = ARGV[2], member = ARGV[3], control = ARGV[4], lost = ARGV[5], retention = ARGV[6],
  }
end

-- Ends the run stored in `hash` (running): idle with `outcome`, one sequence step, the lease
-- removed, the idle key kept for `retention` ms; the key's listeners and the owner's replica are
-- told. `op` names the write in the audit list. Returns the fence and the new sequence.
local function to_idle(k, hash, channel, member, outcome, op, extra)
  local f, q, o = unpack(redis.call('HMGET', hash, 'f', 'q', 'o'))
  local seq = (tonumber(q) or 0) + 1
  redis.call('HSET', hash, 's', 'i', 'q', num(seq), 'x', outcome)
  redis.call('HDEL', hash, 'o', 'd')
  redis.call('PEXPIRE', hash, k.retention)
  redis.call('ZREM', k.leases, member)
  redis.call('PUBLISH', channel,
    '{"f":' .. f .. ',"q":' .. num(seq) .. ',"s":"i","x":' .. outcome .. '}')
  if o then
    redis.call('PUBLISH', k.control .. o,
      '{"k":' .. cjson.encode(member) .. ',"f":' .. f .. ',"x":' .. outcome .. '}')
  end
  audit(k.audit, op, member, f, seq, (extra or '') .. ',"x":' .. outcome)
  return f, seq
end

-- Reaps the run stored in `hash` if it is running past its lease: idle with the `Lost` outcome.
-- Idempotent: a key that is idle or still leased is left alone. Returns whether it reaped.
local function reap(k, hash, channel, member)
  local s, d = unpack(redis.call('HMGET', hash, 's', 'd'))
  if s ~= 'r' or live(d) then
    return false
  end
  to_idle(k, hash, channel, member, k.lost, 'reap', ',"d":' .. num(tonumber(d) or 0))
  return true
end
