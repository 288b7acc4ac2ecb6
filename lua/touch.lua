-- touch.lua: record activity: last_activity, expiry and optionally the message count.
--
-- KEYS[1]  session hash
-- KEYS[2]  user index (its TTL follows the longest-lived session of the user)
-- ARGV[1]  op id (5 chars; repeated on a client retry)
-- ARGV[2]  default ttl in ms (used when the session has no ttl of its own)
-- ARGV[3]  messages to add to the message count (integer >= 0)
-- ARGV[4]  new ttl in ms for this session from now on, or "" to keep it
--
-- Returns {1, expires_at_ms, message_count}  applied,
--         {2, expires_at_ms, message_count}  already applied by an earlier attempt,
--         {-1}                               no such session.
-- The version is not bumped: activity is not a change of the session's content.

local key = KEYS[1]
local opid = ARGV[1]
local cur = redis.call('HMGET', key, 'v', 'o', 't', 'e', 'm')
if not cur[1] then
  return {-1}
end
local ops = cur[2] or ''
for i = 1, #ops, 5 do
  if string.sub(ops, i, i + 4) == opid then
    return {2, tonumber(cur[4]), tonumber(cur[5])}
  end
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = cur[3] or ARGV[2]
local fields = {}
if ARGV[4] ~= '' then
  ttl = ARGV[4]
  fields = {'t', ARGV[4]}
end
local exp = now + tonumber(ttl)
local exps = string.format('%d', exp)
local count = tonumber(cur[5]) + tonumber(ARGV[3])
local more = {'a', string.format('%d', now), 'e', exps, 'm', string.format('%d', count),
              'o', string.sub(opid .. ops, 1, 20)}
for i = 1, #more do
  fields[#fields + 1] = more[i]
end
redis.call('HSET', key, unpack(fields))
redis.call('PEXPIREAT', key, exps)
-- GT: only ever moves the index's expiry later (it must outlive every session it lists).
redis.call('PEXPIREAT', KEYS[2], exps, 'GT')
return {1, exp, count}
