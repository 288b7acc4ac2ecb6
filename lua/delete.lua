-- delete.lua: remove a session and its entry in the user index.
--
-- KEYS[1]  session hash
-- KEYS[2]  user index
-- KEYS[3]  change bucket of this slot (see docs/persistence.md)
-- KEYS[4]  op log of the session (lib/ops.lua)
-- ARGV[1..3]  op id, call digest, retry horizon in ms (lib/ops.lua)
-- ARGV[4]  session suffix (field of the user index)
-- With the state tracker (optional):
-- KEYS[5]  statistics hash of the session's shard (same slot): one session less in its state
-- With expiry rules (optional, after KEYS[5]):
-- KEYS[6]  expiry index bucket of this slot: the session leaves it
--
-- Returns 1 if the session existed, 0 if not, 2 if an earlier attempt of this call ran.
-- The op log is kept (it expires one retry horizon after its last write): a late attempt of a
-- create or update of the deleted session must still be recognised, not applied to a new one.

if op_applied(KEYS[4]) then
  return 2
end
local state = KEYS[5] and redis.call('HGET', KEYS[1], 's')
local existed = redis.call('DEL', KEYS[1])
if state then
  count_session(KEYS[5], ARGV[4], state, -1)
  redis.call('HINCRBY', KEYS[5], 'deleted', 1)
end
redis.call('HDEL', KEYS[2], ARGV[4])
expiry_forget(KEYS[6], KEYS[1])
if existed == 1 then
  session_written(KEYS[1], KEYS[3], KEYS[4], now_ms())
end
return existed
