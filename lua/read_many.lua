-- read_many.lua: the hashes of many sessions of one slot, in one call (batch get_many).
--
-- KEYS[1..n]  session hashes (all in one hash slot on a cluster; the client groups them)
--
-- Returns one flat HGETALL array per key, in KEYS order (empty for a missing session).
-- Read-only; at most 1000 keys per call (the client's chunk), so bounded in time.

local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('HGETALL', KEYS[i])
end
return out
