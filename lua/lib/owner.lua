-- lib/owner.lua: keys held by a token (locks, leases, turns).

-- Delete `key` only if it still holds `token` (its owner's); 1 deleted, 0 someone else's or gone.
local function release_owned(key, token)
  if redis.call('GET', key) == token then
    return redis.call('DEL', key)
  end
  return 0
end
