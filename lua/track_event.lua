-- track_event.lua: append an event to a session's stream and update the session and counters.
--
-- KEYS[1]  session hash
-- KEYS[2]  user index (its TTL follows the longest-lived session of the user)
-- KEYS[3]  the session's event stream
-- KEYS[4]  statistics hash of the session's shard (same slot as the session)
-- KEYS[5]  last-activity zset of the shard's users (same slot)
-- KEYS[6]  change bucket of this slot (the session changed: see docs/persistence.md)
-- KEYS[7]  op log of the session (lib/ops.lua)
-- KEYS[8]  context hash of the session, KEYS[9] its history list (optional, both or neither:
--          they take the session's new expiry)
-- KEYS[10] expiry index bucket of this slot (optional: only with expiry rules, docs/expiry.md)
-- then     the session's sync meta and conflicts (optional: only when the store syncs shared
--          fields, docs/sync.md; they take the session's new expiry). Which optional keys are
--          given is told by their count (lib/session.lua, moving_keys)
-- ARGV[1..3]  op id, call digest, retry horizon in ms (lib/ops.lua)
-- ARGV[4]  event type (validated by the caller) and three flags, space-separated:
--          activity "1"/"0" (refresh last_activity "a" and the TTL), message "1"/"0"
--          (message_count + 1), inbound "1"/"0" (record the gap since the last activity and
--          the user as active)
-- ARGV[5]  what is fixed per session, space-separated (one argument: fewer to pack): default
--          ttl in ms (used when the session has no ttl of its own), stream cap in entries,
--          stream cap in ms (age trim on about one event in 32 to keep the common path short;
--          the stream also expires that long after its last event), user tag (member of
--          KEYS[5]), platform
-- ARGV[6..] field, value, ... (user fields, already encoded)
--
-- Returns {1, entry_id, message_count}  applied,
--         {2, "", message_count}        already applied by an earlier attempt of the same call,
--         {-1}                          no such session (nothing written),
--         {-4}                          an activity event after the session's expiry deadline:
--                                       nothing written (the caller applies the rule, retries).
-- Times are ms, server clock.

local key = KEYS[1]
local cur = redis.call('HMGET', key, 's', 'a', 'm', 't', 'x', 'y', 'w')
if not cur[1] then return {-1} end
local count = tonumber(cur[3])
if op_applied(KEYS[7]) then
  return {2, '', count}
end

local etype, activity, message, inbound = string.match(ARGV[4], '^(%S+) (%d) (%d) (%d)$')
local ttl, maxlen, maxage, user, plat =
  string.match(ARGV[5], '^(%d+) (%d+) (%d+) (%S+) (%S+)$')
local now = now_ms()
if activity == '1' and expiry_passed(cur[5], cur[6], cur[2], cur[3], now, cur[7]) then
  return {-4}
end
local entry = {'t', etype, 's', cur[1]}
for i = 6, #ARGV do
  entry[#entry + 1] = ARGV[i]
end
local id = append_event(KEYS[3], maxlen, maxage, now, now % 32 == 0, entry)

local stats = KEYS[4]
local nows = int(now)
if activity == '1' then
  if message == '1' then
    count = count + 1
  end
  if inbound == '1' then
    local gap = now - tonumber(cur[2])
    if gap < 0 then gap = 0 end
    redis.call('HINCRBY', stats, 'g:' .. plat .. ':' .. int(log_bucket(gap)), 1)
    redis.call('ZADD', KEYS[5], nows, user)
  end
end
count_event(stats, etype, now)
if activity == '1' then
  local exps = int(now + tonumber(cur[4] or ttl))
  local fields = {'a', nows, 'e', exps, 'm', int(count)}
  local bucket = session_update(key, KEYS[2], KEYS[6], KEYS[7], fields, exps, now, nil, 8)
  expiry_index(bucket, key, cur[5], cur[6], now, count, cur[7])
else
  session_written(key, KEYS[6], KEYS[7], now)
end
return {1, id, count}
