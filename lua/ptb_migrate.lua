-- ptb_migrate.lua: move a PTB chat_data record to a migrated chat's key (group -> supergroup).
--
-- Three keys (all in one hash slot; on a standalone server always):
-- KEYS[1]  old chat record hash (field -> encoded value)
-- KEYS[2]  new chat record hash
-- KEYS[3]  op log of the new record (lib/ops.lua)
-- ARGV[1..3]  op id, call digest, retry horizon in ms (lib/ops.lua)
-- ARGV[4]  ttl in ms of the new record: "0" = no expiry, "" = keep the moved record's expiry
-- ARGV[5]  number of field/value pairs to set after the move (n): the migrating worker's own
--          changes not written yet
-- ARGV[6..5+2n]  field, value, ...
-- ARGV[6+2n..]   fields to delete after the move
--
-- If KEYS[1] exists it replaces KEYS[2] (PTB: the new chat's data is overridden) and is gone;
-- if it does not (never stored, or another worker moved it first) KEYS[2] is left as it is, so
-- racing workers end with one copy. The pairs and deletes apply in both cases.
-- Returns {1, hgetall}  moved,  {0, hgetall}  nothing stored at KEYS[1],
--         {2, hgetall}  already applied by an earlier attempt of the same call.
--
-- One key only (a cluster whose two chat keys are in different slots moves in steps):
-- KEYS[1]  old chat record hash;  ARGV[1]  its content mark as read before the copy
--          (_records.content_mark: "<fields>:<sum of the rows' 32-bit SHA1 prefixes>")
-- Deletes KEYS[1] if its content is still what was copied.
-- Returns 1 deleted (or already gone), 0 written meanwhile (kept: the caller copies again).
-- Records written before the op log may hold a field "o" (their op ids): it is not data.

local old = KEYS[1]
if #KEYS == 1 then
  local flat = redis.call('HGETALL', old)
  if #flat == 0 then
    return 1
  end
  -- Order-free, so neither side sorts (Lua's string order follows the server's locale).
  local sum = 0
  for i = 1, #flat, 2 do
    local row = #flat[i] .. ':' .. flat[i] .. #flat[i + 1] .. ':' .. flat[i + 1]
    sum = sum + tonumber(string.sub(redis.sha1hex(row), 1, 8), 16)
  end
  if int(#flat / 2) .. ':' .. int(sum) ~= ARGV[1] then
    return 0
  end
  redis.call('DEL', old)
  return 1
end

local new = KEYS[2]
if op_applied(KEYS[3]) then
  return {2, redis.call('HGETALL', new)}
end

local moved = 0
if redis.call('EXISTS', old) == 1 then
  -- RENAME replaces the target whole and keeps the old record's expiry; same slot by contract.
  redis.call('RENAME', old, new)
  moved = 1
end

local npairs = tonumber(ARGV[5])
local last_set = 5 + 2 * npairs
if npairs > 0 then
  redis.call('HSET', new, unpack(ARGV, 6, last_set))
end
redis.call('HDEL', new, 'o', unpack(ARGV, last_set + 1, #ARGV))
op_record(KEYS[3], now_ms())
if redis.call('EXISTS', new) == 0 then
  -- No data field remains: the record is gone.
  return {moved, {}}
end
record_ttl(new, ARGV[4])
return {moved, redis.call('HGETALL', new)}
