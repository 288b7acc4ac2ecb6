-- seen_update.lua: mark an inbound update as seen; tell whether this call was the first.
--
-- KEYS[1]  the update's marker (string)
-- ARGV[1]  op id of the call (a client retry of the same call repeats it)
-- ARGV[2]  ms the marker is kept
--
-- Returns 1 if this call marked it first (also on a retry of that call), 0 if it was seen.

if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0
