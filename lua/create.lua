-- create.lua: create a session, or return the existing one (get_or_create).
--
-- KEYS[1]  session hash
-- KEYS[2]  user index (hash: session suffix -> 1)
-- KEYS[3]  change bucket of this slot (optional; see docs/persistence.md)
-- ARGV[1]  op id (5 chars; repeated on a client retry)
-- ARGV[2]  mode: "create" (fail if it exists) or "get" (return the existing session)
-- ARGV[3]  ttl in ms for this session, "0" to use ARGV[4]
-- ARGV[4]  default ttl in ms
-- ARGV[5]  session suffix (field of the user index)
-- ARGV[6]  initial state
-- ARGV[7]  priority (integer; "0" is not stored)
-- ARGV[8]  number of field/value pairs that follow (data and metadata, already encoded)
-- ARGV[9..] field, value, field, value, ...
-- With the state tracker (optional, both or neither):
-- KEYS[4]  statistics hash of the session's shard (same slot): sessions per platform and state
-- KEYS[5]  the session's event stream: gets a "created" event
-- ARGV[9 + 2n], ARGV[10 + 2n]  stream cap: max entries, max age in ms (n = ARGV[8])
--
-- Returns {1, hgetall} when created (also on a retry of the call that created it),
--         {0, hgetall} when it existed and mode is "get",
--         {-1}         when it existed and mode is "create".
-- Times are milliseconds since the epoch, taken from the server clock.

local key = KEYS[1]
local opid = ARGV[1]

if redis.call('EXISTS', key) == 1 then
  if ARGV[2] == 'get' then
    return {0, redis.call('HGETALL', key)}
  end
  -- A retry of the very call that created it must not report "exists".
  if op_seen(redis.call('HGET', key, 'o') or '', opid) then
    return {1, redis.call('HGETALL', key)}
  end
  return {-1}
end

local now = now_ms()
local ttl = tonumber(ARGV[3])
local fields = {'v', '1', 's', ARGV[6], 'm', '0', 'o', opid}
if ttl > 0 then
  fields[#fields + 1] = 't'
  fields[#fields + 1] = ARGV[3]
else
  ttl = tonumber(ARGV[4])
end
local nows = int(now)
local exps = int(now + ttl)
for _, name in ipairs({'c', 'u', 'a'}) do
  fields[#fields + 1] = name
  fields[#fields + 1] = nows
end
fields[#fields + 1] = 'e'
fields[#fields + 1] = exps
if ARGV[7] ~= '0' then
  fields[#fields + 1] = 'p'
  fields[#fields + 1] = ARGV[7]
end
local npairs = tonumber(ARGV[8])
for i = 9, 8 + 2 * npairs do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', key, unpack(fields))
redis.call('PEXPIREAT', key, exps)
index_keep(KEYS[2], exps, ARGV[5])

if KEYS[4] then
  local plat = string.match(ARGV[5], '^[^:]+')
  local extra = 9 + 2 * npairs
  redis.call('HINCRBY', KEYS[4], 'n:' .. plat .. ':' .. ARGV[6], 1)
  redis.call('HINCRBY', KEYS[4], 'created', 1)
  count_event(KEYS[4], 'created', now)
  append_event(KEYS[5], ARGV[extra], ARGV[extra + 1], now, true,
               {'t', 'created', 's', ARGV[6], 'v', '1'})
end
mark_changed(KEYS[3], key)
return {1, redis.call('HGETALL', key)}
