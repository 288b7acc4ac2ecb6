-- update.lua: merge data/metadata fields, delete fields, optionally under optimistic concurrency.
--
-- KEYS[1]  session hash
-- KEYS[2]  user index (its TTL follows the longest-lived session of the user)
-- KEYS[3]  change bucket of this slot (optional; see docs/persistence.md)
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
--         {-3, would_have}        the session would hold more than ARGV[6] fields.
-- A retried call is recognised by its op id among the last four recorded in field "o".

local key = KEYS[1]
local opid = ARGV[1]
local cur = redis.call('HMGET', key, 'v', 'o', 't')
if not cur[1] then
  return {-1}
end
local version = tonumber(cur[1])
local ops = cur[2] or ''
for i = 1, #ops, 5 do
  if string.sub(ops, i, i + 4) == opid then
    if ARGV[3] == 'full' then
      return {2, redis.call('HGETALL', key)}
    end
    return {2, version}
  end
end
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= version then
  return {-2, version}
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
  local core = redis.call('HMGET', key, 'v', 's', 'c', 'u', 'a', 'e', 'm', 'p', 't', 'o')
  for i = 1, #core do
    if core[i] then
      total = total - 1
    end
  end
  if total > tonumber(ARGV[6]) then
    return {-3, total}
  end
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exp = now + tonumber(cur[3] or ARGV[4])
local nows = string.format('%d', now)
local exps = string.format('%d', exp)
version = version + 1
local fields = {'v', string.format('%d', version), 'u', nows, 'a', nows, 'e', exps,
                'o', string.sub(opid .. ops, 1, 20)}
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
redis.call('PEXPIREAT', key, exps)
-- GT: only ever moves the index's expiry later (it must outlive every session it lists).
redis.call('PEXPIREAT', KEYS[2], exps, 'GT')
-- Change index for incremental backups (see docs/persistence.md): only while a backup chain
-- has armed this slot's bucket with its '#' counter.
if KEYS[3] and redis.call('ZSCORE', KEYS[3], '#') then
  redis.call('ZADD', KEYS[3], redis.call('ZINCRBY', KEYS[3], 1, '#'), KEYS[1])
end
if ARGV[3] == 'full' then
  return {1, redis.call('HGETALL', key)}
end
return {1, version}
