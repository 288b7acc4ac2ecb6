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
-- only of a record that exists. The whole hash is read once, up front: the op ids, the size and
-- which fields are new all come from it, and the "full" reply is built from it in Lua instead of
-- a second HGETALL (a record holds at most ARGV[3] + 1 fields, so the loops are bounded).

local key = KEYS[1]
local opid = ARGV[1]
local flat = redis.call('HGETALL', key)
local at = {}
local ops = ''
for i = 1, #flat, 2 do
  at[flat[i]] = i + 1
  if flat[i] == 'o' then
    ops = flat[i + 1]
  end
end
local size = #flat / 2
if at['o'] then
  size = size - 1
end

-- Each branch builds its own reply and applies the expiry inline: this script runs on every
-- update_data, and closures would be created afresh on every call.
local full = ARGV[4] == 'full'
local ttl = ARGV[2]

local function count(rows)
  local n = 0
  for i = 1, #rows, 2 do
    if rows[i] ~= 'o' then
      n = n + 1
    end
  end
  return n
end

if op_seen(ops, opid) then
  if full then
    return {2, flat}
  end
  return {2, size}
end

local npairs = tonumber(ARGV[5])
local last_set = 5 + 2 * npairs
if npairs == 0 and #ARGV == last_set then
  if #flat > 0 and ttl ~= '' then
    if ttl == '0' then
      redis.call('PERSIST', key)
    else
      redis.call('PEXPIRE', key, ttl)
    end
  end
  if full then
    return {1, flat}
  end
  return {1, size}
end

local grow = 0
for i = 6, last_set, 2 do
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
if npairs > 0 and size + grow - #dels > tonumber(ARGV[3]) then
  return {-3, size + grow - #dels}
end

-- The new contents, in Lua: existing rows updated in place, new fields appended.
local newops = op_pushed(ops, opid)
local fields = {'o', newops}
local rows = flat
if at['o'] then
  rows[at['o']] = newops
else
  rows[#rows + 1] = 'o'
  rows[#rows + 1] = newops
  at['o'] = #rows
end
for i = 6, last_set, 2 do
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
if #rows <= 2 then
  -- Nothing but the op ids would remain: the record goes.
  redis.call('DEL', key)
  if full then
    return {1, {}}
  end
  return {1, 0}
end
redis.call('HSET', key, unpack(fields))
if ttl == '0' then
  redis.call('PERSIST', key)
elseif ttl ~= '' then
  redis.call('PEXPIRE', key, ttl)
end
if full then
  return {1, rows}
end
return {1, count(rows)}
