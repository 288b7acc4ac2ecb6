-- record_merge.lua: merge and delete fields of a record hash (aiogram FSM data, PTB data).
--
-- KEYS[1]  record hash (field -> encoded value)
-- KEYS[2]  op log of the record (lib/ops.lua)
-- ARGV[1..3]  op id, call digest, retry horizon in ms (lib/ops.lua)
-- ARGV[4]  ttl in ms: "0" = no expiry (PERSIST), "" = keep the key's current expiry
-- ARGV[5]  max number of data fields the record may reach
-- ARGV[6]  reply: "full" (the whole hash) or "size" (the number of data fields)
-- ARGV[7]  number of field/value pairs to set (n)
-- ARGV[8..7+2n]   field, value, ...
-- ARGV[8+2n..]    fields to delete
--
-- Returns {1, hgetall | size}  applied,
--         {2, hgetall | size}  already applied by an earlier attempt of the same call,
--         {-3, would_have}     the record would exceed ARGV[5] data fields (nothing written).
-- A record left with no data field is deleted. An empty merge only renews the expiry, and
-- only of a record that exists. The whole hash is read once, up front: the size and which
-- fields are new come from it, and the "full" reply is built from it in Lua instead of a second
-- HGETALL (a record holds at most ARGV[5] + 1 fields, so the loops are bounded). Records written
-- before the op log may hold a field "o" (their op ids): it is not data, and the next write
-- drops it.

local key = KEYS[1]
local flat = redis.call('HGETALL', key)
local at = {}
for i = 1, #flat, 2 do
  at[flat[i]] = i + 1
end
local size = #flat / 2
if at['o'] then
  size = size - 1
end

-- Each branch builds its own reply and applies the expiry inline.
local full = ARGV[6] == 'full'
local ttl = ARGV[4]

if op_applied(KEYS[2]) then
  if full then
    return {2, flat}
  end
  return {2, size}
end

local npairs = tonumber(ARGV[7])
local last_set = 7 + 2 * npairs
if npairs == 0 and #ARGV == last_set then
  if #flat > 0 then
    record_ttl(key, ttl)
  end
  if full then
    return {1, flat}
  end
  return {1, size}
end

local grow = 0
for i = 8, last_set, 2 do
  if not at[ARGV[i]] then
    grow = grow + 1
  end
end
local dels = {}
local gone = {}
for i = last_set + 1, #ARGV do
  if at[ARGV[i]] and not gone[ARGV[i]] then
    dels[#dels + 1] = ARGV[i]
    gone[ARGV[i]] = true
  end
end
if npairs > 0 and size + grow - #dels > tonumber(ARGV[5]) then
  return {-3, size + grow - #dels}
end
if at['o'] then
  dels[#dels + 1] = 'o'
  gone['o'] = true
end

-- The new contents, in Lua: existing rows updated in place, new fields appended.
local fields = {}
local rows = flat
for i = 8, last_set, 2 do
  local name, value = ARGV[i], ARGV[i + 1]
  fields[#fields + 1] = name
  fields[#fields + 1] = value
  gone[name] = nil
  if at[name] then
    rows[at[name]] = value
  else
    rows[#rows + 1] = name
    rows[#rows + 1] = value
    at[name] = #rows
  end
end
if #dels > 0 then
  redis.call('HDEL', key, unpack(dels))
  local kept = {}
  for i = 1, #rows, 2 do
    if not gone[rows[i]] then
      kept[#kept + 1] = rows[i]
      kept[#kept + 1] = rows[i + 1]
    end
  end
  rows = kept
end
op_record(KEYS[2], now_ms())
if #rows == 0 then
  -- No data field would remain: the record goes.
  redis.call('DEL', key)
  if full then
    return {1, {}}
  end
  return {1, 0}
end
if #fields > 0 then
  redis.call('HSET', key, unpack(fields))
end
record_ttl(key, ttl)
if full then
  return {1, rows}
end
return {1, #rows / 2}
