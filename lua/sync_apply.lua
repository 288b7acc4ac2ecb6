-- sync_apply.lua: apply shared fields to one session, deciding each against what is stored.
--
-- A local write stamps its fields; a sync from a linked session applies them by strategy,
-- comparing hybrid-logical-clock stamps (sessioncache/hlc.py: fixed-width strings, so string
-- order is time order). Safe to run twice: an equal stamp is already applied.
-- KEYS[1]  session hash
-- KEYS[2]  user index (unused: a sync keeps the session's expiry; here for the slot check)
-- KEYS[3]  change bucket of this slot (docs/persistence.md)
-- KEYS[4]  op log of the session (lib/ops.lua)
-- KEYS[5]  sync meta of the session (hash: h:<f> stamp, b:<f> base, o:<f> origin,
--          r:<f> origin rank, j:<f> merge state as JSON)
-- KEYS[6]  conflicts of the session (hash: <conflict id>:<part> -> value)
-- ARGV[1..3]  op id, call digest, retry horizon in ms (lib/ops.lua)
-- ARGV[4]  "local" (this session's own write: always applies) or the strategy of a sync:
--          "lww", "fww", "priority", "merge", "manual", "cas" (custom: applies only if the
--          stored stamp still equals the field's base)
-- ARGV[5]  origin: the session id the values come from
-- ARGV[6]  origin rank for "priority" (lower wins)
-- ARGV[7]  number of fields n; then n groups of 6:
--          stored field name, stamp, base stamp ("" none), kind ("v" value, "d" delete,
--          "m" merge: the value is JSON, a local value, {"+": n} a local increment, or a
--          linked session's merge state),
--          value (encoded by codec.py, or JSON), conflict id (for "manual")
--
-- Returns {1, version, r1, ..., rn} with ri per field: "a" applied, "k" kept the stored one,
-- "c" conflict recorded (the stored value stays), "x" stored stamp moved (cas: read again);
-- {2, version} already applied by an earlier attempt; {-1} no such session.

local key, meta, conflicts = KEYS[1], KEYS[5], KEYS[6]
local version = redis.call('HGET', key, 'v')
if not version then return {-1} end
if op_applied(KEYS[4]) then return {2, tonumber(version)} end
local mode, origin, rank = ARGV[4], ARGV[5], tonumber(ARGV[6])

-- msgpack of a decoded JSON value (codec.py stores non-text values as 0xC1 + msgpack).
local function be(n, width)
  local out = {}
  for i = width, 1, -1 do
    out[i] = string.char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(out)
end
local pack
local function pack_float(x)
  if x ~= x then return '\203\127\248' .. string.rep('\0', 6) end
  local sign = 0
  if x < 0 or (x == 0 and 1 / x < 0) then sign = 128; x = -x end
  if x == math.huge then return '\203' .. string.char(sign + 127, 240) .. string.rep('\0', 6) end
  local m, e = math.frexp(x)
  if x == 0 then m, e = 0, -1022 end
  e = e + 1022
  if e <= 0 then m = m * 2 ^ (e - 1); e = 0 else m = m * 2 - 1 end
  m = m * 2 ^ 52
  local hi = math.floor(m / 2 ^ 32)
  return '\203' .. be((sign * 2 ^ 24) + e * 2 ^ 20 + hi, 4) .. be(m % 2 ^ 32, 4)
end
pack = function(v)
  local t = type(v)
  if v == nil or v == cjson.null then return '\192' end
  if t == 'boolean' then return v and '\195' or '\194' end
  if t == 'number' then
    if v == math.floor(v) and v >= 0 and v < 2 ^ 32 then return '\206' .. be(v, 4) end
    if v == math.floor(v) and v < 0 and v >= -2 ^ 31 then return '\210' .. be(2 ^ 32 + v, 4) end
    return pack_float(v)
  end
  if t == 'string' then return '\219' .. be(#v, 4) .. v end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  if n > 0 and n == #v then
    local out = {'\221' .. be(n, 4)}
    for i = 1, n do out[#out + 1] = pack(v[i]) end
    return table.concat(out)
  end
  local names = {}
  for k in pairs(v) do names[#names + 1] = tostring(k) end
  table.sort(names)
  local out = {'\223' .. be(n, 4)}
  for _, k in ipairs(names) do out[#out + 1] = pack(k) .. pack(v[k]) end
  return table.concat(out)
end
local function encode(v)
  if type(v) == 'string' then return v end
  return '\193' .. pack(v)
end

-- Merge states: {c = {origin = {n, stamp}}} a counter (the sum of each origin's share),
-- {s = list} a set (sorted union), {m = map, t = stamp} a map (deep merge, the newer stamp
-- wins a leaf), {v = value, t = stamp} anything else (newer stamp wins).
local function is_list(v)
  return type(v) == 'table' and #v > 0
end
local function deep(a, b)  -- b wins leaves
  if type(a) ~= 'table' or type(b) ~= 'table' or is_list(a) or is_list(b) then return b end
  local out = {}
  for k, x in pairs(a) do out[k] = x end
  for k, x in pairs(b) do out[k] = deep(a[k], x) end
  return out
end
local function union(a, b)
  local seen, out = {}, {}
  for _, list in ipairs({a, b}) do
    for _, x in ipairs(list) do
      local id = cjson.encode(x)
      if not seen[id] then seen[id] = true; out[#out + 1] = {id, x} end
    end
  end
  table.sort(out, function(p, q) return p[1] < q[1] end)
  local res = {}
  for i = 1, #out do res[i] = out[i][2] end
  return res
end
local function merge(st, inc, stamp)
  st = st or {}
  if inc.c then
    st = {c = st.c or {}}
    for who, part in pairs(inc.c) do
      local mine = st.c[who]
      if not mine or part[2] > mine[2] then st.c[who] = part end
    end
  elseif inc.s then
    st = {s = union(st.s or {}, inc.s)}
  elseif inc.m then
    if st.m and st.t and st.t > inc.t then st = {m = deep(inc.m, st.m), t = st.t}
    else st = {m = deep(st.m or {}, inc.m), t = inc.t} end
  elseif not st.t or inc.t > st.t then
    st = inc
  end
  return st
end
local function local_state(st, value, stamp)
  if type(value) == 'table' and type(value['+']) == 'number' then  -- an increment
    local mine = ((st and st.c) or {})[origin]
    if mine and stamp <= mine[2] then stamp = mine[2] .. '+' end
    return merge(st, {c = {[origin] = {(mine and mine[1] or 0) + value['+'], stamp}}}, stamp)
  elseif type(value) == 'number' then
    local others = 0
    for who, part in pairs((st and st.c) or {}) do
      if who ~= origin then others = others + part[1] end
    end
    return merge(st, {c = {[origin] = {value - others, stamp}}}, stamp)
  elseif is_list(value) then
    return merge(st, {s = value}, stamp)
  elseif type(value) == 'table' then
    return merge(st, {m = value, t = stamp}, stamp)
  end
  return merge(st, {v = value, t = stamp}, stamp)
end
local function render(st)
  if st.c then
    local sum = 0
    for _, part in pairs(st.c) do sum = sum + part[1] end
    return sum
  end
  if st.s then return st.s end
  if st.m then return st.m end
  return st.v
end

local n = tonumber(ARGV[7])
local sets, dels, out, changed = {}, {}, {1, 0}, false
for i = 0, n - 1 do
  local at = 8 + i * 6
  local f, stamp, base, kind, value, cid =
    ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], ARGV[at + 5]
  local cur = redis.call('HMGET', meta, 'h:' .. f, 'r:' .. f)
  local have, have_rank = cur[1], tonumber(cur[2] or '1000000')
  if mode == 'local' and have and stamp <= have then
    -- Another process's clock is ahead: a local write still orders after what it replaces.
    stamp = have .. '+'
  end
  local verdict
  if have == stamp and mode ~= 'merge' then
    verdict = 'k'
  elseif mode == 'local' or not have then
    verdict = 'a'
  elseif mode == 'lww' or mode == 'merge' then
    verdict = (stamp > have or mode == 'merge') and 'a' or 'k'
  elseif mode == 'fww' then
    verdict = stamp < have and 'a' or 'k'
  elseif mode == 'priority' then
    verdict = (rank < have_rank or (rank == have_rank and stamp > have)) and 'a' or 'k'
  elseif mode == 'cas' then
    verdict = (have == base) and 'a' or 'x'
  elseif mode == 'manual' then
    verdict = (have == base) and 'a' or 'c'
  else
    error('sync_apply: unknown strategy ' .. mode)
  end
  if verdict == 'c' and redis.call('HEXISTS', conflicts, cid .. ':f') == 0 then
    redis.call('HSET', conflicts, cid .. ':f', f, cid .. ':v', value, cid .. ':k', kind,
               cid .. ':s', stamp, cid .. ':o', origin, cid .. ':h', have)
  elseif verdict == 'a' then
    if kind == 'm' then
      local st = cjson.decode(redis.call('HGET', meta, 'j:' .. f) or 'null')
      if st == cjson.null then st = nil end
      local inc = cjson.decode(value)
      if mode == 'local' then st = local_state(st, inc, stamp) else st = merge(st, inc, stamp) end
      if not have or stamp > have then
        redis.call('HSET', meta, 'h:' .. f, stamp, 'o:' .. f, origin)
      end
      redis.call('HSET', meta, 'j:' .. f, cjson.encode(st))
      sets[#sets + 1] = f
      sets[#sets + 1] = encode(render(st))
    else
      redis.call('HSET', meta, 'h:' .. f, stamp, 'b:' .. f, have or '', 'o:' .. f, origin,
                 'r:' .. f, ARGV[6])
      if kind == 'd' then
        dels[#dels + 1] = f
      else
        sets[#sets + 1] = f
        sets[#sets + 1] = value
      end
    end
    changed = true
  end
  out[#out + 1] = verdict
end
if changed then
  version = tonumber(version) + 1
  sets[#sets + 1] = 'v'
  sets[#sets + 1] = int(version)
  sets[#sets + 1] = 'u'
  sets[#sets + 1] = int(now_ms())
  if #dels > 0 then redis.call('HDEL', key, unpack(dels)) end
  redis.call('HSET', key, unpack(sets))
  local pttl = redis.call('PTTL', key)
  if pttl > 0 then
    redis.call('PEXPIRE', meta, pttl)
    if redis.call('EXISTS', conflicts) == 1 then redis.call('PEXPIRE', conflicts, pttl) end
  end
end
session_written(key, KEYS[3], KEYS[4], now_ms())
out[2] = tonumber(version)
return out
