-- update.lua: merge data/metadata fields, delete fields, optionally under optimistic concurrency.
--
-- KEYS[1]  session hash
-- KEYS[2]  user index (its TTL follows the longest-lived session of the user)
-- KEYS[3]  change bucket of this slot (optional; see docs/persistence.md)
-- KEYS[4]  expiry index bucket of this slot (optional: only with expiry rules, docs/expiry.md)
-- ARGV[1]  op id (5 chars; repeated on a client retry)
-- ARGV[2]  expected version, or "" for an unconditional update
-- ARGV[3]  reply: "full" (the whole hash) or "version" (the new version only)
-- ARGV[4]  default ttl in ms (used when the session has no ttl of its own)
-- ARGV[5]  priority, or "" to keep it
-- ARGV[6]  max number of data + metadata fields the session may hold
-- ARGV[7]  number of field/value pairs to set (n)
-- ARGV[8..7+2n]      field, value, ...
-- ARGV[8+2n..]       fields to delete
--
-- Returns {1, hgetall | version}  applied,
--         {2, hgetall | version}  already applied by an earlier attempt of the same call,
--         {-1}                    no such session,
--         {-2, current_version}   expected version did not match,
--         {-3, would_have}        the session would hold more than ARGV[6] fields,
--         {-4}                    its expiry deadline has passed: nothing written (the
--                                 caller applies the rule, then retries).
-- A retried call is recognised by its op id among the last four recorded in field "o".

local key = KEYS[1]
local opid = ARGV[1]
local cur = redis.call('HMGET', key, 'v', 'o', 't', 'x', 'y', 'a', 'm')
if not cur[1] then
  return {-1}
end
local version = tonumber(cur[1])
local ops = cur[2] or ''
if op_seen(ops, opid) then
  if ARGV[3] == 'full' then
    return {2, redis.call('HGETALL', key)}
  end
  return {2, version}
end
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= version then
  return {-2, version}
end
local now = now_ms()
if expiry_passed(cur[4], cur[5], cur[6], cur[7], now) then
  return {-4}
end

local npairs = tonumber(ARGV[7])
local last_set = 7 + 2 * npairs
local dels = {}
for i = last_set + 1, #ARGV do
  dels[#dels + 1] = ARGV[i]
end
-- Eight core fields always exist, so HLEN - 8 bounds the data + metadata fields from above;
-- only a session that could reach the limit pays for the exact count.
local grow = 0
if redis.call('HLEN', key) - 8 + npairs > tonumber(ARGV[6]) then
  for i = 8, last_set, 2 do
    grow = grow + 1 - redis.call('HEXISTS', key, ARGV[i])
  end
  for i = 1, #dels do
    grow = grow - redis.call('HEXISTS', key, dels[i])
  end
end
if grow > 0 then
  -- One-character names are the session's own fields; they do not count against the limit.
  local total = redis.call('HLEN', key) + grow
  local core = redis.call('HMGET', key, 'v', 's', 'c', 'u', 'a', 'e', 'm', 'p', 't', 'o',
                          'x', 'y', 'w')
  for i = 1, #core do
    if core[i] then
      total = total - 1
    end
  end
  if total > tonumber(ARGV[6]) then
    return {-3, total}
  end
end

local nows = int(now)
local exps = int(now + tonumber(cur[3] or ARGV[4]))
version = version + 1
local fields = {'v', int(version), 'u', nows, 'a', nows, 'e', exps, 'o', op_pushed(ops, opid)}
if ARGV[5] ~= '' then
  fields[#fields + 1] = 'p'
  fields[#fields + 1] = ARGV[5]
end
for i = 8, last_set do
  fields[#fields + 1] = ARGV[i]
end
if #dels > 0 then
  redis.call('HDEL', key, unpack(dels))
end
redis.call('HSET', key, unpack(fields))
expire_session(key, KEYS[2], exps)
mark_changed(KEYS[3], key)
expiry_index(KEYS[4], key, cur[4], cur[5], now, tonumber(cur[7]))
if ARGV[3] == 'full' then
  return {1, redis.call('HGETALL', key)}
end
return {1, version}
