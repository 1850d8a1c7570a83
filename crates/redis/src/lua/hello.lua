-- hello: the namespace's epoch, created (from ARGV[1], a fresh random id) if it is missing.
-- A missing epoch means the data was lost (or the namespace is new): every replica that knew the
-- old one notices on its next call and ends its runs as `Lost`. KEYS = epoch.
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
