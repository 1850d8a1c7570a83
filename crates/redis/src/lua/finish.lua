-- finish: the owner's run ended by itself (completed, failed, panicked); the items it yielded
-- last go in the same step. ARGV[7] fence, ARGV[8] outcome (codec text), ARGV[9] the sequence
-- the owner last wrote, ARGV[10] 'p' or 'd' and ARGV[11] the progress to store (as for
-- progress), ARGV[12..] items. A retried finish that already got through finds the key idle with
-- this fence: not_owner's 'gone' reply carries the outcome stored.
-- Returns {'ok', seq} | not_owner's reply | epoch.
local k = key_context()
local refused = wrong_epoch(k.epoch, ARGV[1])
if refused then return refused end
local fence, outcome, expected = ARGV[7], ARGV[8], tonumber(ARGV[9])
local gone = not_owner(k, fence)
if gone then return gone end

local n = #ARGV - 11
local q = tonumber(redis.call('HGET', k.hash, 'q'))
if q ~= expected then
  return redis.error_reply('finish: stored sequence ' .. num(q or -1) .. ', the owner expected '
    .. num(expected))
end
if n > 0 then
  local first, last = q + 1, q + n
  redis.call('HSET', k.hash, 'q', num(last), 'p', ARGV[11])
  publish_items(k, fence, first, ARGV[10], ARGV[11], 12)
  audit(k.audit, 'progress', k.member, fence, last, ',"n":' .. n)
end
local _, seq = to_idle(k, k.hash, k.channel, k.member, outcome, 'finish')
return {'ok', num(seq)}
