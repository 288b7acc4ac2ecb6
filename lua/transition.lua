-- transition.lua: move a session to another state if the transition table allows it.
--
-- KEYS[1]  session hash
-- KEYS[2]  the session's event stream
-- KEYS[3]  statistics hash of the session's shard (same slot as the session)
-- KEYS[4]  change bucket of this slot (the session changed: see docs/persistence.md)
-- KEYS[5]  op log of the session (lib/ops.lua)
-- ARGV[1..3]  op id, call digest, retry horizon in ms (lib/ops.lua)
-- ARGV[4]  target state
-- ARGV[5]  expected version, or "" for any
-- ARGV[6]  reason (already encoded), or "" for none
-- ARGV[7]  what is fixed per platform, target and table, space-separated (one argument: fewer
--          to pack): platform, table version, stream cap in entries, stream cap in ms (the
--          stream also expires that long after its last event), terminal states ",a,b,", and
--          the states this platform's table allows to move to the target ",a,b," (validated
--          names: no spaces, no magic characters)
--
-- Returns {1, hgetall, from_state}  applied,
--         {2, hgetall}              already applied by an earlier attempt of the same call,
--         {-1}                      no such session,
--         {-2, current_version}     expected version did not match,
--         {-4, current_state}       the table does not allow current -> target.
-- Nothing is written unless the move is applied. Times are ms, server clock.

local key = KEYS[1]
local cur = redis.call('HMGET', key, 'v', 's', 'c', 'm')
if not cur[1] then return {-1} end
local version = tonumber(cur[1])
if op_applied(KEYS[5]) then
  return {2, redis.call('HGETALL', key)}
end
if version_moved(ARGV[5], version) then
  return {-2, version}
end
local now = now_ms()
local from = state_move(key, KEYS[2], KEYS[3], cur, ARGV[4], ARGV[7], ARGV[6], now)
if not from then
  return {-4, cur[2]}
end
session_written(key, KEYS[4], KEYS[5], now)
return {1, redis.call('HGETALL', key), from}
