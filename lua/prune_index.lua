-- prune_index.lua: drop user-index entries whose session hash has expired or vanished.
--
-- KEYS[1]    user index
-- KEYS[2..]  session hashes found missing by the caller
-- ARGV[i]    the index field of KEYS[i + 1]
--
-- Returns the number of entries removed. Entries whose session exists again are kept, so a
-- session re-created between the caller's read and this script is never dropped.

local removed = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    removed = removed + redis.call('HDEL', KEYS[1], ARGV[i - 1])
  end
end
return removed
