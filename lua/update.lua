-- update.lua: merge data/metadata fields, delete fields, optionally under optimistic concurrency.
--
-- KEYS[1]  session hash
-- KEYS[2]  user index (its TTL follows the longest-lived session of the user)
-- KEYS[3]  change bucket of this slot (see docs/persistence.md)
-- KEYS[4]  op log of the session (lib/ops.lua)
-- KEYS[5]  context hash of the session, KEYS[6] its history list (optional, both or neither:
--          they take the session's new expiry)
-- KEYS[7]  expiry index bucket of this slot (optional: only with expiry rules, docs/expiry.md;
--          only after KEYS[5] and KEYS[6])
-- then     the session's sync meta and conflicts (optional: given when the store syncs shared
--          fields, docs/sync.md, and always with shared fields; they take the session's new
--          expiry). Which optional keys are given is told by their count (lib/session.lua,
--          moving_keys)
-- ARGV[1..3]  op id, call digest, retry horizon in ms (lib/ops.lua)
-- ARGV[4]  expected version, or "" for an unconditional update
-- ARGV[5]  reply: "full" (the whole hash) or "version" (the new version only)
-- ARGV[6]  default ttl in ms (used when the session has no ttl of its own)
-- ARGV[7]  priority, or "" to keep it
-- ARGV[8]  max number of data + metadata fields the session may hold
-- ARGV[9]  number of field/value pairs to set (n)
-- ARGV[10..9+2n]     field, value, ...
-- ARGV[10+2n]        number of fields to delete (d; absent: none), then d field names
-- then, optional, shared fields (docs/sync.md), decided in this same step by lib/sync.lua, so a
-- write of shared and other fields is one script and one version:
--   ARGV[s]          number of shared fields m (absent or 0: none); with m > 0 the last two
--                    KEYS must be the session's sync meta and conflicts (see above)
--   ARGV[s+1..s+4]   origin (this session's id), origin rank, announce channel, announcement
--   ARGV[s+5..]      m groups of 6 (lib/sync.lua, sync_fields), applied as mode "local"
--
-- Returns {1, hgetall | version}  applied (with shared fields a third element: per field
--                                 its stamp, base stamp and merge state, as stored),
--         {2, hgetall | version}  already applied by an earlier attempt of the same call,
--         {-1}                    no such session,
--         {-2, current_version}   expected version did not match,
--         {-3, would_have}        the session would hold more than ARGV[8] fields,
--         {-4}                    its expiry deadline has passed: nothing written (the
--                                 caller applies the rule, then retries).

local key = KEYS[1]
local cur = redis.call('HMGET', key, 'v', 't', 'x', 'y', 'a', 'm', 'w')
if not cur[1] then return {-1} end
local version = tonumber(cur[1])
if op_applied(KEYS[4]) then
  if ARGV[5] == 'full' then
    return {2, redis.call('HGETALL', key)}
  end
  return {2, version}
end
if version_moved(ARGV[4], version) then
  return {-2, version}
end
local now = now_ms()
if expiry_passed(cur[3], cur[4], cur[5], cur[6], now, cur[7]) then
  return {-4}
end

local npairs = tonumber(ARGV[9])
local last_set = 9 + 2 * npairs
local ndel = tonumber(ARGV[last_set + 1] or '0')
local dels, adds = {}, {}
for i = 10, last_set, 2 do
  adds[#adds + 1] = ARGV[i]
end
for i = last_set + 2, last_set + 1 + ndel do
  dels[#dels + 1] = ARGV[i]
end
local sync_at = last_set + 2 + ndel
local nsync = tonumber(ARGV[sync_at] or '0')
local drops = {unpack(dels)}
for i = 0, nsync - 1 do
  local j = sync_at + 5 + i * 6
  if ARGV[j + 3] == 'd' then drops[#drops + 1] = ARGV[j] else adds[#adds + 1] = ARGV[j] end
end
-- Seven core fields always exist, so HLEN - 7 bounds the data + metadata fields from above;
-- only a session that could reach the limit pays for the exact count.
local grow = 0
if redis.call('HLEN', key) - 7 + #adds > tonumber(ARGV[8]) then
  for i = 1, #adds do
    grow = grow + 1 - redis.call('HEXISTS', key, adds[i])
  end
  for i = 1, #drops do
    grow = grow - redis.call('HEXISTS', key, drops[i])
  end
end
if grow > 0 then
  local total = session_field_count(key) + grow
  if total > tonumber(ARGV[8]) then
    return {-3, total}
  end
end

local nows = int(now)
local exps = int(now + tonumber(cur[2] or ARGV[6]))
version = version + 1
local fields = {'v', int(version), 'u', nows, 'a', nows, 'e', exps}
if ARGV[7] ~= '' then
  fields[#fields + 1] = 'p'
  fields[#fields + 1] = ARGV[7]
end
for i = 10, last_set do
  fields[#fields + 1] = ARGV[i]
end
local stamped = nil
if nsync > 0 then
  local _
  _, _, stamped = sync_fields(KEYS[#KEYS - 1], KEYS[#KEYS], 'local', ARGV[sync_at + 1],
                              ARGV[sync_at + 2], sync_at + 5, nsync, fields, dels)
end
if #dels > 0 then
  redis.call('HDEL', key, unpack(dels))
end
-- After sync_fields: the sync pair it may have created takes the session's expiry here.
local bucket = session_update(key, KEYS[2], KEYS[3], KEYS[4], fields, exps, now, nil, 5)
expiry_index(bucket, key, cur[3], cur[4], now, tonumber(cur[6]), cur[7])
local reply = version
if ARGV[5] == 'full' then
  reply = redis.call('HGETALL', key)
end
if not stamped then
  return {1, reply}
end
redis.call('PUBLISH', ARGV[sync_at + 3], ARGV[sync_at + 4])
local flat = {}
for i = 1, #stamped do
  for k = 1, 3 do flat[#flat + 1] = stamped[i][k] end
end
return {1, reply, flat}
