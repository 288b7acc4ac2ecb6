-- expiry_arm.lua: give a session its expiry rule (fields x, y) and its expiry index entry.
--
-- KEYS[1]  session hash
-- KEYS[2]  expiry index bucket of the session's slot
-- ARGV[1]  x: fixed deadline in ms, or "" for none
-- ARGV[2]  y: "mode|idle|limit|grace|rule|lead" (see lib/expiry.lua), or "" to disarm, or
--          "-" to drop a stale index entry: the sweep read the session as gone or unarmed, and
--          the entry goes only if that is still so here (a session recreated and armed since
--          keeps its entry)
-- ARGV[3]  the session's created ms as the caller read it ("" for any): a session recreated
--          since is left alone
-- ARGV[4]  b: the start of the rule's period (lib/period.lua) when the caller starts a new one
--          (restore_archived), "" or absent to leave field b as it is
-- ARGV[5]  the session's priority the rule was picked for, "" or absent for any: when two
--          writers change the priority, the re-pick for the older priority finds it changed and
--          leaves the rule to the re-pick for the newer one
--
-- Returns {1, due or -1} armed (or disarmed), {0} no such session (or a newer one, or a
-- priority other than ARGV[5]).
-- Idempotent: a retry writes the same fields and the same index entry.

local key = KEYS[1]
local cur = redis.call('HMGET', key, 'c', 'a', 'm', 'y', 'w', 'p')
if ARGV[2] == '-' then
  if not cur[1] or not cur[4] then
    redis.call('ZREM', KEYS[2], key)
  end
  return {0}
end
if not cur[1] or (ARGV[3] ~= '' and cur[1] ~= ARGV[3]) then
  return {0}
end
if ARGV[5] and ARGV[5] ~= '' and (cur[6] or '0') ~= ARGV[5] then
  return {0}
end
if ARGV[2] == '' then
  redis.call('HDEL', key, 'x', 'y', 'w')
  redis.call('ZREM', KEYS[2], key)
  return {1, -1}
end
local x = nil
if ARGV[1] ~= '' then
  x = ARGV[1]
  redis.call('HSET', key, 'x', x, 'y', ARGV[2])
else
  redis.call('HSET', key, 'y', ARGV[2])
  redis.call('HDEL', key, 'x')
end
if ARGV[4] and ARGV[4] ~= '' then
  redis.call('HSET', key, 'b', ARGV[4])
end
local w = cur[5]
if cur[4] ~= ARGV[2] and w then
  redis.call('HDEL', key, 'w')  -- a new rule starts its stages over
  w = nil
end
expiry_index(KEYS[2], key, x, ARGV[2], cur[2], cur[3], w)
local due = expiry_due(x, ARGV[2], tonumber(cur[2]), tonumber(cur[3]))
return {1, due or -1}
