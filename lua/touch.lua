-- touch.lua: record activity: last_activity, expiry and optionally the message count.
--
-- KEYS[1]  session hash
-- KEYS[2]  user index (its TTL follows the longest-lived session of the user)
-- KEYS[3]  change bucket of this slot (see docs/persistence.md)
-- KEYS[4]  op log of the session (lib/ops.lua)
-- KEYS[5]  context hash of the session, KEYS[6] its history list (optional, both or neither:
--          they take the session's new expiry)
-- KEYS[7]  expiry index bucket of this slot (optional: only with expiry rules, docs/expiry.md)
-- then     the session's sync meta and conflicts (optional: only when the store syncs shared
--          fields, docs/sync.md; they take the session's new expiry). Which optional keys are
--          given is told by their count (lib/session.lua, moving_keys)
-- ARGV[1..3]  op id, call digest, retry horizon in ms (lib/ops.lua)
-- ARGV[4]  default ttl in ms (used when the session has no ttl of its own)
-- ARGV[5]  messages to add to the message count (integer >= 0)
-- ARGV[6]  new ttl in ms for this session from now on, or "" to keep it
--
-- Returns {1, expires_at_ms, message_count}  applied,
--         {2, expires_at_ms, message_count}  already applied by an earlier attempt,
--         {-1}                               no such session,
--         {-4}                               its expiry deadline has passed: nothing written
--                                            (the caller applies the rule, then retries).
-- The version is not bumped: activity is not a change of the session's content.

local key = KEYS[1]
local cur = redis.call('HMGET', key, 'v', 't', 'e', 'm', 'x', 'y', 'a', 'w')
if not cur[1] then return {-1} end
if op_applied(KEYS[4]) then
  return {2, tonumber(cur[3]), tonumber(cur[4])}
end

local now = now_ms()
if expiry_passed(cur[5], cur[6], cur[7], cur[4], now, cur[8]) then
  return {-4}
end
local ttl = cur[2] or ARGV[4]
local fields = {}
if ARGV[6] ~= '' then
  ttl = ARGV[6]
  fields = {'t', ARGV[6]}
end
local exp = now + tonumber(ttl)
local exps = int(exp)
local count = tonumber(cur[4]) + tonumber(ARGV[5])
local more = {'a', int(now), 'e', exps, 'm', int(count)}
for i = 1, #more do
  fields[#fields + 1] = more[i]
end
local bucket = session_update(key, KEYS[2], KEYS[3], KEYS[4], fields, exps, now, nil, 5)
expiry_index(bucket, key, cur[5], cur[6], now, count, cur[8])
return {1, exp, count}
