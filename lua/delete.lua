-- delete.lua: remove a session and its entry in the user index.
--
-- KEYS[1]  session hash
-- KEYS[2]  user index
-- KEYS[3]  change bucket of this slot (optional; see docs/persistence.md)
-- ARGV[1]  session suffix (field of the user index)
-- With the state tracker (optional):
-- KEYS[4]  statistics hash of the session's shard (same slot): one session less in its state
-- With expiry rules (optional, after KEYS[4]):
-- KEYS[5]  expiry index bucket of this slot: the session leaves it
--
-- Returns 1 if the session existed, 0 if not. Running it twice is harmless.

local state = KEYS[4] and redis.call('HGET', KEYS[1], 's')
local existed = redis.call('DEL', KEYS[1])
if state then
  count_session(KEYS[4], ARGV[1], state, -1)
  redis.call('HINCRBY', KEYS[4], 'deleted', 1)
end
redis.call('HDEL', KEYS[2], ARGV[1])
expiry_forget(KEYS[5], KEYS[1])
if existed == 1 then
  mark_changed(KEYS[3], KEYS[1])
end
return existed
