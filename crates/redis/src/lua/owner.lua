-- Publishes a batch of items on the key's channel, one message: snapshots as
-- {"f","q","s":"r","p":[…]}, deltas as {"f","q","s":"r","d":[…],"a":accumulated} (every replica
-- then knows the accumulated value without folding). Item i has sequence first + i - 1; the
-- items are ARGV[from..].
local function publish_items(k, fence, first, mode, progress, from)
  local items = table.concat(ARGV, ',', from)
  local message
  if mode == 'd' then
    message = '{"f":' .. fence .. ',"q":' .. num(first) .. ',"s":"r","d":[' .. items .. '],"a":'
      .. progress .. '}'
  else
    message = '{"f":' .. fence .. ',"q":' .. num(first) .. ',"s":"r","p":[' .. items .. ']}'
  end
  redis.call('PUBLISH', k.channel, message)
end

-- Shared by the owner's writes (renew, progress, finish): the run must still hold the key.
-- Returns nil when it does; otherwise the reply that tells the owner why not:
-- {'lost'} when its lease had run out (reaped here, in this same step), or
-- {'gone', state, fence, outcome} with what the key holds now (stopped, or taken over).
local function not_owner(k, fence)
  local s, f, d, x = unpack(redis.call('HMGET', k.hash, 's', 'f', 'd', 'x'))
  if s == 'r' and f == fence then
    if live(d) then
      return nil
    end
    reap(k, k.hash, k.channel, k.member)
    return {'lost'}
  end
  return {'gone', s or '', f or '', x or ''}
end
