-- context_write.lua: set and delete a session's context variables and dialogue slots at once.
--
-- KEYS[1]  session hash (must exist: its 'c' field is the context's generation)
-- KEYS[2]  context hash: 'v:<name>' variables, 's:<name>' slots, '#step' the dialogue step,
--          '#nv' number of variables, and the history counters (see context_append.lua)
-- KEYS[3]  history list (dropped with a context left by an earlier session)
-- ARGV[1]  context schema version
-- ARGV[2]  most variables a context may hold
-- ARGV[3]  "" keeps the dialogue step, else "=" + the step to switch to (a new step drops
--          the slots of the old one; "=" alone is no step)
-- ARGV[4]  r: number of required variable fields that follow, then r names ('v:<name>')
-- then     s: number of field/value pairs to set, then the pairs ('v:..' or 's:..' fields)
-- then     d: number of fields to delete, then the fields
--
-- Returns {1, variables count} on success, {-1} if the session does not exist,
-- {-2, field} if a required variable would be missing, {-3, count} if the variable count
-- would pass ARGV[2]. Nothing is written unless it returns 1. Running it twice is harmless.
-- The context keys take the session's expiry (lib/context.lua).

local gen = context_gen(KEYS[1])
if not gen then return {-1} end
local fresh = redis.call('HGET', KEYS[2], '#g') ~= gen

local i = 4
local nreq = tonumber(ARGV[i])
local required = {}
for j = 1, nreq do
  required[j] = ARGV[i + j]
end
i = i + nreq + 1
local nset = tonumber(ARGV[i])
local sets = {}
local setnames = {}
for j = 0, nset - 1 do
  local name = ARGV[i + 1 + 2 * j]
  sets[#sets + 1] = name
  sets[#sets + 1] = ARGV[i + 2 + 2 * j]
  setnames[name] = true
end
i = i + 2 * nset + 1
local ndel = tonumber(ARGV[i])
local dels = {}
local delnames = {}
for j = 1, ndel do
  dels[j] = ARGV[i + j]
  delnames[ARGV[i + j]] = true
end

local function stored(name)
  return (not fresh) and redis.call('HEXISTS', KEYS[2], name) == 1
end

-- Check everything before the first write.
for _, name in ipairs(required) do
  if delnames[name] or not (setnames[name] or stored(name)) then
    return {-2, name}
  end
end
local count = fresh and 0 or tonumber(redis.call('HGET', KEYS[2], '#nv') or '0')
for name in pairs(setnames) do
  if string.sub(name, 1, 2) == 'v:' and not delnames[name] and not stored(name) then
    count = count + 1
  end
end
for name in pairs(delnames) do
  if string.sub(name, 1, 2) == 'v:' and stored(name) then
    count = count - 1
  end
end
if count > tonumber(ARGV[2]) then
  return {-3, count}
end

context_claim(KEYS[2], KEYS[3], gen, ARGV[1])
local step = string.sub(ARGV[3], 2)
if ARGV[3] ~= '' and (redis.call('HGET', KEYS[2], '#step') or '') ~= step then
  -- Bounded by the context's size: variables and slots are capped by the client.
  local old = {}
  for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
    if string.sub(name, 1, 2) == 's:' then
      old[#old + 1] = name
    end
  end
  if #old > 0 then
    redis.call('HDEL', KEYS[2], unpack(old))
  end
  redis.call('HSET', KEYS[2], '#step', step)
end
if ndel > 0 then
  redis.call('HDEL', KEYS[2], unpack(dels))
end
if nset > 0 then
  redis.call('HSET', KEYS[2], unpack(sets))
end
redis.call('HSET', KEYS[2], '#nv', count)

follow_expiry(KEYS[1], KEYS[2], KEYS[3])
return {1, count}
