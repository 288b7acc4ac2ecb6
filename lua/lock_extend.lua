-- lock_extend.lua: push a held lock's expiry out, only if the caller still owns it.
--
-- KEYS[1]  lock key (string holding the owner's token)
-- ARGV[1]  the caller's token
-- ARGV[2]  new time to live in ms, from now
--
-- Returns 1 extended, 0 not the owner any more. Idempotent: a retry sets the same expiry.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
