-- lib/lease.lua: a lease is a string key holding its owner's token, with a TTL.

-- Delete the lease `key` if `token` still owns it; 1 if released, 0 if not the owner (it
-- expired, and maybe someone else holds it now).
local function lease_release(key, token)
  if redis.call('GET', key) == token then
    return redis.call('DEL', key)
  end
  return 0
end
