-- read: a key's stored state, for `state`, nodes and listeners' snapshots. KEYS = epoch, hash.
-- Returns {epoch, s, f, q, a, p, x, o}, '' for what is absent. Never refuses: the caller
-- compares the epoch itself.
local epoch = redis.call('GET', KEYS[1])
local s, f, q, a, p, x, o = unpack(redis.call('HMGET', KEYS[2], 's', 'f', 'q', 'a', 'p', 'x', 'o'))
return {epoch or '', s or '', f or '', q or '', a or '', p or '', x or '', o or ''}
