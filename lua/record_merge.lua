-- record_merge.lua: merge and delete fields of a record hash (aiogram FSM data, PTB data).
--
-- KEYS[1]  record hash (field -> encoded value; field "o" holds recent op ids)
-- ARGV[1]  op id (5 chars; repeated on a client retry)
-- ARGV[2]  ttl in ms: "0" = no expiry (PERSIST), "" = keep the key's current expiry
-- ARGV[3]  max number of data fields the record may reach
-- ARGV[4]  reply: "full" (the whole hash) or "size" (the number of data fields)
-- ARGV[5]  number of field/value pairs to set (n)
-- ARGV[6..5+2n]   field, value, ...
-- ARGV[6+2n..]    fields to delete
--
-- Returns {1, hgetall | size}  applied,
--         {2, hgetall | size}  already applied by an earlier attempt of the same call,
--         {-3, would_have}     the record would exceed ARGV[3] data fields (nothing written).
-- A record left with no data field is deleted. An empty merge only renews the expiry, and
-- only of a record that exists.

local key = KEYS[1]
local opid = ARGV[1]

local function reply(code)
  if ARGV[4] == 'full' then
    return {code, redis.call('HGETALL', key)}
  end
  local size = redis.call('HLEN', key)
  if size > 0 then
    size = size - 1
  end
  return {code, size}
end

local function expire()
  if ARGV[2] == '0' then
    redis.call('PERSIST', key)
  elseif ARGV[2] ~= '' then
    redis.call('PEXPIRE', key, ARGV[2])
  end
end

local ops = redis.call('HGET', key, 'o') or ''
for i = 1, #ops, 5 do
  if string.sub(ops, i, i + 4) == opid then
    return reply(2)
  end
end

local npairs = tonumber(ARGV[5])
local last_set = 5 + 2 * npairs
if npairs == 0 and #ARGV == last_set then
  expire()
  return reply(1)
end

local dels = {}
for i = last_set + 1, #ARGV do
  dels[#dels + 1] = ARGV[i]
end
local size = redis.call('HLEN', key)
if size > 0 then
  size = size - 1
end
-- Only a write that could overflow pays for counting which of its fields are new.
local grow = 0
if size + npairs > tonumber(ARGV[3]) then
  for i = 6, last_set, 2 do
    grow = grow + 1 - redis.call('HEXISTS', key, ARGV[i])
  end
end
if npairs > 0 and size + grow > tonumber(ARGV[3]) then
  -- Deletions in the same call may make room; count only those that exist.
  local freed = 0
  for i = 1, #dels do
    freed = freed + redis.call('HEXISTS', key, dels[i])
  end
  if size + grow - freed > tonumber(ARGV[3]) then
    return {-3, size + grow - freed}
  end
end

if #dels > 0 then
  redis.call('HDEL', key, unpack(dels))
end
local fields = {'o', string.sub(opid .. ops, 1, 20)}
for i = 6, last_set do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', key, unpack(fields))
if redis.call('HLEN', key) <= 1 then
  redis.call('DEL', key)
  return reply(1)
end
expire()
return reply(1)
