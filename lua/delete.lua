-- delete.lua: remove a session and its entry in the user index.
--
-- KEYS[1]  session hash
-- KEYS[2]  user index
-- ARGV[1]  session suffix (field of the user index)
--
-- Returns 1 if the session existed, 0 if not. Running it twice is harmless.

local existed = redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return existed
