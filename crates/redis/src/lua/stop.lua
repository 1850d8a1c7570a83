-- stop: from any replica (D3). ARGV[7] the fence of the run to stop, or '' for whichever run
-- holds the key; ARGV[8] the outcome (codec text); ARGV[9] the stopping replica's id.
-- Returns {'ok', fence, seq} | {'idle', fence, outcome} (nothing runs: idle, or reaped here
-- because its lease had run out; the key's last run and outcome) | {'stale', fence} (another run
-- holds the key) | epoch.
local k = key_context()
local refused = wrong_epoch(k.epoch, ARGV[1])
if refused then return refused end
local fence, outcome, by = ARGV[7], ARGV[8], ARGV[9]

local s, f = unpack(redis.call('HMGET', k.hash, 's', 'f'))
if s ~= 'r' or reap(k, k.hash, k.channel, k.member) then
  local last_fence, outcome = unpack(redis.call('HMGET', k.hash, 'f', 'x'))
  return {'idle', last_fence or '', outcome or ''}
end
if fence ~= '' and f ~= fence then
  return {'stale', f}
end
local _, seq = to_idle(k, k.hash, k.channel, k.member, outcome, 'stop',
  ',"by":' .. cjson.encode(by))
return {'ok', f, num(seq)}
