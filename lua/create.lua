-- create.lua: create a session, or return the existing one (get_or_create).
--
-- KEYS[1]  session hash
-- KEYS[2]  user index (hash: session suffix -> 1)
-- KEYS[3]  change bucket of this slot (see docs/persistence.md)
-- KEYS[4]  op log of the session (lib/ops.lua)
-- ARGV[1..3]  op id, call digest, retry horizon in ms (lib/ops.lua)
-- ARGV[4]  mode: "create" (fail if it exists) or "get" (return the existing session)
-- ARGV[5]  ttl in ms for this session, "0" to use ARGV[6]
-- ARGV[6]  default ttl in ms
-- ARGV[7]  session suffix (field of the user index)
-- ARGV[8]  initial state
-- ARGV[9]  priority (integer; "0" is not stored)
-- ARGV[10] number of field/value pairs that follow (data and metadata, already encoded)
-- ARGV[11..] field, value, field, value, ...
-- With the state tracker (optional, both or neither):
-- KEYS[5]  statistics hash of the session's shard (same slot): sessions per platform and state
-- KEYS[6]  the session's event stream: gets a "created" event
-- ARGV[11 + 2n], ARGV[12 + 2n]  stream cap: max entries, max age in ms (n = ARGV[10])
--
-- Returns {1, hgetall} when created (also on a retry of the call that created it; the hash is
--                      empty if the session was deleted since),
--         {0, hgetall} when it existed and mode is "get",
--         {-1}         when it existed and mode is "create".
-- Times are milliseconds since the epoch, taken from the server clock.

local key = KEYS[1]
local log = KEYS[4]

-- A retry of the very call that created it must not report "exists", nor create it again
-- after someone deleted it.
if op_applied(log) then
  return {1, redis.call('HGETALL', key)}
end
if redis.call('EXISTS', key) == 1 then
  if ARGV[4] == 'get' then
    return {0, redis.call('HGETALL', key)}
  end
  return {-1}
end

local now = now_ms()
local ttl = tonumber(ARGV[5])
local fields = {'v', '1', 's', ARGV[8], 'm', '0'}
if ttl > 0 then
  fields[#fields + 1] = 't'
  fields[#fields + 1] = ARGV[5]
else
  ttl = tonumber(ARGV[6])
end
local nows = int(now)
local exps = int(now + ttl)
for _, name in ipairs({'c', 'u', 'a'}) do
  fields[#fields + 1] = name
  fields[#fields + 1] = nows
end
fields[#fields + 1] = 'e'
fields[#fields + 1] = exps
if ARGV[9] ~= '0' then
  fields[#fields + 1] = 'p'
  fields[#fields + 1] = ARGV[9]
end
local npairs = tonumber(ARGV[10])
for i = 11, 10 + 2 * npairs do
  fields[#fields + 1] = ARGV[i]
end
session_update(key, KEYS[2], KEYS[3], log, fields, exps, now, ARGV[7])

if KEYS[5] then
  local plat = string.match(ARGV[7], '^[^:]+')
  local extra = 11 + 2 * npairs
  redis.call('HINCRBY', KEYS[5], 'n:' .. plat .. ':' .. ARGV[8], 1)
  redis.call('HINCRBY', KEYS[5], 'created', 1)
  count_event(KEYS[5], 'created', now)
  append_event(KEYS[6], ARGV[extra], ARGV[extra + 1], now, true,
               {'t', 'created', 's', ARGV[8], 'v', '1'})
end
return {1, redis.call('HGETALL', key)}
