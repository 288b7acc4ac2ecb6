-- archive_restore.lua: bring an archived session back live, whole, with its event stream.
--
-- KEYS[1]  archive hash (ns:ar:...#<created ms>)
-- KEYS[2]  archive event stream
-- KEYS[3]  session hash (where it lived)
-- KEYS[4]  the session's event stream
-- KEYS[5]  user index (hash: session suffix -> 1)
-- KEYS[6]  the user's archive index
-- KEYS[7]  statistics hash of the session's shard (one session more in its state)
-- KEYS[8]  change bucket of this slot (see docs/persistence.md)
-- KEYS[9]  expiry index bucket of this slot: the session's rule is armed again here
-- ARGV[1]  session suffix (field of the user index)
-- ARGV[2]  archive member (<suffix>#<created ms>)
-- ARGV[3]  default ttl in ms (when the session has no ttl of its own)
-- ARGV[4]  "replace" to replace a live session of the same id, "" to refuse
--
-- Returns {1, hgetall} restored, {-1} no such archive, {-2} a live session has the id.
-- Data, metadata, state, version, priority and events come back as archived; the restore counts
-- as activity and starts the rule's period anew (lib/period.lua, period_restart), in this same
-- call: its stages start over (w dropped); its fixed deadline x (an absolute age, a daily
-- boundary: the one that archived it, long past) is dropped, so no sweep takes the session
-- again before the caller arms a new one counted from the restore; its message limit counts
-- from the restored message count (field b records the start), so a session archived for its
-- message count is not due again at its next write. Then the rule (field y) is armed again
-- in the expiry index from that activity.
-- A retry after success finds no archive and returns -1.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1}
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  if ARGV[4] ~= 'replace' then
    return {-2}
  end
  local old = redis.call('HGET', KEYS[3], 's')
  count_session(KEYS[7], ARGV[1], old, -1)
  redis.call('DEL', KEYS[3], KEYS[4])
end
local now = now_ms()
redis.call('RENAME', KEYS[1], KEYS[3])
redis.call('HDEL', KEYS[3], 'X', 'Y')
local y, m = period_restart(KEYS[3], now)
local ttl = redis.call('HGET', KEYS[3], 't') or ARGV[3]
local exps = int(now + tonumber(ttl))
redis.call('HSET', KEYS[3], 'a', int(now), 'e', exps)
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('RENAME', KEYS[2], KEYS[4])
  redis.call('PEXPIREAT', KEYS[4], exps)
end
redis.call('PERSIST', KEYS[3])
redis.call('PEXPIREAT', KEYS[3], exps)
index_keep(KEYS[5], exps, ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[2])
count_session(KEYS[7], ARGV[1], redis.call('HGET', KEYS[3], 's'), 1)
expiry_index(KEYS[9], KEYS[3], nil, y, now, m)
mark_changed(KEYS[8], KEYS[3])
return {1, redis.call('HGETALL', KEYS[3])}
