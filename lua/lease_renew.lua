-- lease_renew.lua: extend a fleet lease, only if the caller still holds it.
--
-- KEYS[1]  lease key (string: holder token)
-- ARGV[1]  the caller's token
-- ARGV[2]  new time to live in ms
--
-- Returns 1 renewed, 0 the lease expired or another process holds it.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
