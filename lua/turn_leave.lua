-- turn_leave.lua: give a conversation's turn back, or leave its line of waiters.
--
-- KEYS[1]  turn lease (string holding the holder's token)
-- KEYS[2]  waiter queue (zset)
-- KEYS[3]  waiter liveness (hash)
-- ARGV[1]  the caller's token
--
-- Returns 1 if the caller held the turn (now released), 0 otherwise. Running it twice is
-- harmless: the second run finds another token or none, and no queue entry.

redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[3])  -- with nobody in line, the arrival counter can start over
else
  redis.call('HDEL', KEYS[3], ARGV[1])
end
return release_owned(KEYS[1], ARGV[1])
