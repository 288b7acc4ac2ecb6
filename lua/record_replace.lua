-- record_replace.lua: replace every field of a record hash (aiogram FSM set_data).
--
-- KEYS[1]  record hash (field -> encoded value)
-- KEYS[2]  op log of the record (lib/ops.lua)
-- ARGV[1..3]  op id, call digest, retry horizon in ms (lib/ops.lua)
-- ARGV[4]  ttl in ms: "0" = no expiry
-- ARGV[5..]  field, value, field, value, ... (the new contents; none = delete the record)
--
-- Returns 1 applied, 2 already applied by an earlier attempt of the same call.
-- The op log is separate from the record, so a late retry of a merge that was applied before
-- this replace is still recognised and not applied on top of it.

local key = KEYS[1]
if op_applied(KEYS[2]) then
  return 2
end

redis.call('DEL', key)
op_record(KEYS[2], now_ms())
if #ARGV < 5 then
  return 1
end
redis.call('HSET', key, unpack(ARGV, 5))
if ARGV[4] ~= '0' then
  redis.call('PEXPIRE', key, ARGV[4])
end
return 1
