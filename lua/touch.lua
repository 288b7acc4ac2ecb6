-- touch.lua: record activity: last_activity, expiry and optionally the message count.
--
-- KEYS[1]  session hash
-- KEYS[2]  user index (its TTL follows the longest-lived session of the user)
-- KEYS[3]  change bucket of this slot (optional; see docs/persistence.md)
-- KEYS[4]  expiry index bucket of this slot (optional: only with expiry rules, docs/expiry.md)
-- ARGV[1]  op id (5 chars; repeated on a client retry)
-- ARGV[2]  default ttl in ms (used when the session has no ttl of its own)
-- ARGV[3]  messages to add to the message count (integer >= 0)
-- ARGV[4]  new ttl in ms for this session from now on, or "" to keep it
--
-- Returns {1, expires_at_ms, message_count}  applied,
--         {2, expires_at_ms, message_count}  already applied by an earlier attempt,
--         {-1}                               no such session,
--         {-4}                               its expiry deadline has passed: nothing written
--                                            (the caller applies the rule, then retries).
-- The version is not bumped: activity is not a change of the session's content.

local key = KEYS[1]
local opid = ARGV[1]
local cur = redis.call('HMGET', key, 'v', 'o', 't', 'e', 'm', 'x', 'y', 'a')
if not cur[1] then
  return {-1}
end
local ops = cur[2] or ''
if op_seen(ops, opid) then
  return {2, tonumber(cur[4]), tonumber(cur[5])}
end

local now = now_ms()
if expiry_passed(cur[6], cur[7], cur[8], cur[5], now) then
  return {-4}
end
local ttl = cur[3] or ARGV[2]
local fields = {}
if ARGV[4] ~= '' then
  ttl = ARGV[4]
  fields = {'t', ARGV[4]}
end
local exp = now + tonumber(ttl)
local exps = int(exp)
local count = tonumber(cur[5]) + tonumber(ARGV[3])
local more = {'a', int(now), 'e', exps, 'm', int(count), 'o', op_pushed(ops, opid)}
for i = 1, #more do
  fields[#fields + 1] = more[i]
end
redis.call('HSET', key, unpack(fields))
expire_session(key, KEYS[2], exps)
mark_changed(KEYS[3], key)
expiry_index(KEYS[4], key, cur[6], cur[7], now, count)
return {1, exp, count}
