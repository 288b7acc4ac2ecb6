-- ptb_migrate.lua: move a PTB chat_data record to a migrated chat's key (group -> supergroup).
--
-- Two keys (both in one hash slot; on a standalone server always):
-- KEYS[1]  old chat record hash (field -> encoded value; field "o" holds recent op ids)
-- KEYS[2]  new chat record hash
-- ARGV[1]  op id (5 chars; repeated on a client retry)
-- ARGV[2]  ttl in ms of the new record: "0" = no expiry, "" = keep the moved record's expiry
-- ARGV[3]  number of field/value pairs to set after the move (n): the migrating worker's own
--          changes not written yet
-- ARGV[4..3+2n]  field, value, ...
-- ARGV[4+2n..]   fields to delete after the move
--
-- If KEYS[1] exists it replaces KEYS[2] (PTB: the new chat's data is overridden) and is gone;
-- if it does not (never stored, or another worker moved it first) KEYS[2] is left as it is, so
-- racing workers end with one copy. The pairs and deletes apply in both cases.
-- Returns {1, hgetall}  moved,  {0, hgetall}  nothing stored at KEYS[1],
--         {2, hgetall}  already applied by an earlier attempt of the same call.
--
-- One key only (a cluster whose two chat keys are in different slots moves in steps):
-- KEYS[1]  old chat record hash;  ARGV[1]  its "o" field as read before the copy ("" if none)
-- Deletes KEYS[1] if no write reached it since (its "o" field is unchanged).
-- Returns 1 deleted (or already gone), 0 written meanwhile (kept: the caller copies again).

local old = KEYS[1]
if #KEYS == 1 then
  if redis.call('EXISTS', old) == 0 then
    return 1
  end
  if (redis.call('HGET', old, 'o') or '') ~= ARGV[1] then
    return 0
  end
  redis.call('DEL', old)
  return 1
end

local new = KEYS[2]
local opid = ARGV[1]
local ops = redis.call('HGET', new, 'o') or ''
if op_seen(ops, opid) then
  return {2, redis.call('HGETALL', new)}
end

local moved = 0
if redis.call('EXISTS', old) == 1 then
  ops = redis.call('HGET', old, 'o') or ''
  -- RENAME replaces the target whole and keeps the old record's expiry; same slot by contract.
  redis.call('RENAME', old, new)
  moved = 1
end

local npairs = tonumber(ARGV[3])
local last_set = 3 + 2 * npairs
if npairs > 0 then
  redis.call('HSET', new, unpack(ARGV, 4, last_set))
end
if #ARGV > last_set then
  redis.call('HDEL', new, unpack(ARGV, last_set + 1, #ARGV))
end
if redis.call('HLEN', new) <= (redis.call('HEXISTS', new, 'o') == 1 and 1 or 0) then
  -- Nothing but the op ids would remain: the record goes.
  redis.call('DEL', new)
  return {moved, {}}
end
redis.call('HSET', new, 'o', op_pushed(ops, opid))
if ARGV[2] == '0' then
  redis.call('PERSIST', new)
elseif ARGV[2] ~= '' then
  redis.call('PEXPIRE', new, ARGV[2])
end
return {moved, redis.call('HGETALL', new)}
