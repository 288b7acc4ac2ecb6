-- record_replace.lua: replace every field of a record hash (aiogram FSM set_data).
--
-- KEYS[1]  record hash (field -> encoded value; field "o" holds recent op ids)
-- ARGV[1]  op id (5 chars; repeated on a client retry)
-- ARGV[2]  ttl in ms: "0" = no expiry
-- ARGV[3..]  field, value, field, value, ... (the new contents; none = delete the record)
--
-- Returns 1 applied, 2 already applied by an earlier attempt of the same call.
-- The op ids of earlier writes are carried over, so a late retry of a merge that was already
-- applied before this replace is still recognised and not applied on top of it.

local key = KEYS[1]
local opid = ARGV[1]
local ops = redis.call('HGET', key, 'o') or ''
if op_seen(ops, opid) then
  return 2
end

redis.call('DEL', key)
if #ARGV < 3 then
  return 1
end
local fields = {'o', op_pushed(ops, opid)}
for i = 3, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', key, unpack(fields))
if ARGV[2] ~= '0' then
  redis.call('PEXPIRE', key, ARGV[2])
end
return 1
