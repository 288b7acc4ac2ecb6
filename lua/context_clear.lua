-- context_clear.lua: empty a session's conversation history (variables and slots stay).
--
-- KEYS[1]  context hash (its history counters are reset; message numbers keep counting)
-- KEYS[2]  history list
--
-- Returns how many messages were removed. Running it twice is harmless.

local n = redis.call('LLEN', KEYS[2])
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], '#b', '0', '#t', '0')
  redis.call('HDEL', KEYS[1], '#s')
end
return n
