-- lease_release.lua: give up a fleet lease, only if the caller still holds it.
--
-- KEYS[1]  lease key (string: holder token)
-- ARGV[1]  the caller's token
--
-- Returns 1 released, 0 the lease had expired or belongs to another process (left alone).

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
