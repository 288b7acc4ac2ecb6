-- lib/sync.lua: shared fields decided against their stored stamps (sync_apply.lua, update.lua).
--
-- Stamps are hybrid-logical-clock strings (sessioncache/hlc.py: fixed width, so string order is
-- time order). A session's sync meta hash holds h:<f> stamp, b:<f> base (the stamp the write
-- replaced), o:<f> origin, r:<f> origin rank, j:<f> merge state as JSON; its conflicts hash
-- holds <conflict id>:<part> (f, v, k, s, o, h) for strategy "manual".

-- msgpack of a decoded JSON value (codec.py stores non-text values as 0xC1 + msgpack).
local function sync_be(n, width)
  local out = {}
  for i = width, 1, -1 do
    out[i] = string.char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(out)
end
local sync_pack
local function sync_pack_float(x)
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
  return '\203' .. sync_be((sign * 2 ^ 24) + e * 2 ^ 20 + hi, 4) .. sync_be(m % 2 ^ 32, 4)
end
sync_pack = function(v)
  local t = type(v)
  if v == nil or v == cjson.null then return '\192' end
  if t == 'boolean' then return v and '\195' or '\194' end
  if t == 'number' then
    if v == math.floor(v) and v >= 0 and v < 2 ^ 32 then return '\206' .. sync_be(v, 4) end
    if v == math.floor(v) and v < 0 and v >= -2 ^ 31 then return '\210' .. sync_be(2 ^ 32 + v, 4) end
    return sync_pack_float(v)
  end
  if t == 'string' then return '\219' .. sync_be(#v, 4) .. v end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  if n > 0 and n == #v then
    local out = {'\221' .. sync_be(n, 4)}
    for i = 1, n do out[#out + 1] = sync_pack(v[i]) end
    return table.concat(out)
  end
  local names = {}
  for k in pairs(v) do names[#names + 1] = tostring(k) end
  table.sort(names)
  local out = {'\223' .. sync_be(n, 4)}
  for _, k in ipairs(names) do out[#out + 1] = sync_pack(k) .. sync_pack(v[k]) end
  return table.concat(out)
end
local function sync_encode(v)
  if type(v) == 'string' then return v end
  return '\193' .. sync_pack(v)
end

-- Merge states: {c = {origin = {n, stamp}}} a counter (the sum of each origin's share),
-- {s = list} a set (sorted union), {m = map, t = stamp} a map (deep merge, the newer stamp
-- wins a leaf), {v = value, t = stamp} anything else (newer stamp wins).
local function sync_is_list(v)
  return type(v) == 'table' and #v > 0
end
local function sync_deep(a, b)  -- b wins leaves
  if type(a) ~= 'table' or type(b) ~= 'table' or sync_is_list(a) or sync_is_list(b) then return b end
  local out = {}
  for k, x in pairs(a) do out[k] = x end
  for k, x in pairs(b) do out[k] = sync_deep(a[k], x) end
  return out
end
local function sync_union(a, b)
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
local function sync_merge(st, inc, stamp)
  st = st or {}
  if inc.c then
    st = {c = st.c or {}}
    for who, part in pairs(inc.c) do
      local mine = st.c[who]
      if not mine or part[2] > mine[2] then st.c[who] = part end
    end
  elseif inc.s then
    st = {s = sync_union(st.s or {}, inc.s)}
  elseif inc.m then
    if st.m and st.t and st.t > inc.t then st = {m = sync_deep(inc.m, st.m), t = st.t}
    else st = {m = sync_deep(st.m or {}, inc.m), t = inc.t} end
  elseif not st.t or inc.t > st.t then
    st = inc
  end
  return st
end
local function sync_local_state(st, value, stamp, origin)
  if type(value) == 'table' and type(value['+']) == 'number' then  -- an increment
    local mine = ((st and st.c) or {})[origin]
    if mine and stamp <= mine[2] then stamp = mine[2] .. '+' end
    return sync_merge(st, {c = {[origin] = {(mine and mine[1] or 0) + value['+'], stamp}}}, stamp)
  elseif type(value) == 'number' then
    local others = 0
    for who, part in pairs((st and st.c) or {}) do
      if who ~= origin then others = others + part[1] end
    end
    return sync_merge(st, {c = {[origin] = {value - others, stamp}}}, stamp)
  elseif sync_is_list(value) then
    return sync_merge(st, {s = value}, stamp)
  elseif type(value) == 'table' then
    return sync_merge(st, {m = value, t = stamp}, stamp)
  end
  return sync_merge(st, {v = value, t = stamp}, stamp)
end
local function sync_render(st)
  if st.c then
    local sum = 0
    for _, part in pairs(st.c) do sum = sum + part[1] end
    return sum
  end
  if st.s then return st.s end
  if st.m then return st.m end
  return st.v
end

-- Decide and apply one shared field `f` (stamp, base stamp or "", kind "v" value / "d" delete /
-- "m" merge JSON, value, conflict id) against the session's sync meta. `mode` is "local" (the
-- session's own write: always applies, ordered after what it replaces) or a strategy: "lww",
-- "fww", "priority", "merge", "manual", "cas" (applies only while the stored stamp equals the
-- base). An applied value is added to `sets` (field, value, ...) or `dels`, for the caller's
-- one HSET/HDEL of the session.
-- Returns the verdict ("a" applied, "k" kept, "c" conflict recorded, "x" stamp moved) and
-- {stamp, base, merge state or ""} as stored.
local function sync_field(meta, conflicts, mode, origin, rank_arg, f, stamp, base, kind, value,
                          cid, sets, dels)
  local rank = tonumber(rank_arg)
  local cur = redis.call('HMGET', meta, 'h:' .. f, 'r:' .. f)
  local have, have_rank = cur[1], tonumber(cur[2] or '1000000')
  if mode == 'local' and have and stamp <= have then
    -- Another process's clock is ahead: a local write still orders after what it replaces.
    -- Its own stamp goes after the '+': two writes ordered after the same stored stamp (a
    -- value synced to two linked sessions, then a lagging write on each) must not store equal
    -- stamps, since an equal stamp means "this very write, already applied" (verdict "k"
    -- below) and the two sessions would keep different values for good.
    stamp = have .. '+' .. stamp
  end
  local verdict
  if have == stamp and (mode ~= 'merge' or kind ~= 'm') then
    verdict = 'k'
  elseif mode == 'local' or not have or mode == 'merge' then
    -- A merge is decided below: "k" when the merged state equals the stored one.
    verdict = 'a'
  elseif mode == 'lww' then
    verdict = stamp > have and 'a' or 'k'
  elseif mode == 'fww' then
    verdict = stamp < have and 'a' or 'k'
  elseif mode == 'priority' then
    verdict = (rank < have_rank or (rank == have_rank and stamp > have)) and 'a' or 'k'
  elseif mode == 'cas' then
    verdict = (have == base) and 'a' or 'x'
  elseif mode == 'manual' then
    verdict = (have == base) and 'a' or 'c'
  else
    error('sync: unknown strategy ' .. mode)
  end
  local state = ''
  if verdict == 'c' and redis.call('HEXISTS', conflicts, cid .. ':f') == 0 then
    redis.call('HSET', conflicts, cid .. ':f', f, cid .. ':v', value, cid .. ':k', kind,
               cid .. ':s', stamp, cid .. ':o', origin, cid .. ':h', have)
  elseif verdict == 'a' then
    if kind == 'm' then
      local st = cjson.decode(redis.call('HGET', meta, 'j:' .. f) or 'null')
      if st == cjson.null then st = nil end
      -- Packed before merging (the merge may update st's tables in place); sync_pack sorts
      -- map keys, so equal states pack alike.
      local before = st and sync_pack(st)
      local inc = cjson.decode(value)
      if mode == 'local' then
        st = sync_local_state(st, inc, stamp, origin)
      else
        st = sync_merge(st, inc, stamp)
      end
      if mode == 'merge' and before == sync_pack(st) then
        -- A repeated sync (or a replayed plan) that merges nothing new: no write, no version.
        return 'k', {stamp, have or '', ''}
      end
      if not have or stamp > have then
        redis.call('HSET', meta, 'h:' .. f, stamp, 'o:' .. f, origin)
      end
      state = cjson.encode(st)
      redis.call('HSET', meta, 'j:' .. f, state)
      sets[#sets + 1] = f
      sets[#sets + 1] = sync_encode(sync_render(st))
    else
      redis.call('HSET', meta, 'h:' .. f, stamp, 'b:' .. f, have or '', 'o:' .. f, origin,
                 'r:' .. f, rank_arg)
      if kind == 'd' then
        dels[#dels + 1] = f
      else
        sets[#sets + 1] = f
        sets[#sets + 1] = value
      end
    end
  end
  return verdict, {stamp, have or '', state}
end

-- Decide and apply n shared fields, ARGV[at..] in groups of 6 (sync_field's f .. cid).
-- Returns the verdicts, whether anything applied, and per field {stamp, base, merge state or
-- ""} as stored (for a local write: what its sync to linked sessions sends, without reading
-- it back).
local function sync_fields(meta, conflicts, mode, origin, rank_arg, at, n, sets, dels)
  local verdicts, stamped, changed = {}, {}, false
  for i = 0, n - 1 do
    local j = at + i * 6
    local verdict, st = sync_field(meta, conflicts, mode, origin, rank_arg, ARGV[j],
                                   ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4],
                                   ARGV[j + 5], sets, dels)
    changed = changed or verdict == 'a'
    verdicts[#verdicts + 1] = verdict
    stamped[#stamped + 1] = st
  end
  return verdicts, changed, stamped
end

-- How a sync's decided fields reach the session `key` (at `version`): one HDEL/HSET with the
-- next version and write time if anything `changed`, the sync keys following its expiry, then
-- session_written. Returns the version now stored.
local function sync_write(key, meta, conflicts, bucket, log, version, changed, sets, dels)
  if changed then
    version = tonumber(version) + 1
    sets[#sets + 1] = 'v'
    sets[#sets + 1] = int(version)
    sets[#sets + 1] = 'u'
    sets[#sets + 1] = int(now_ms())
    if #dels > 0 then redis.call('HDEL', key, unpack(dels)) end
    redis.call('HSET', key, unpack(sets))
    follow_expiry(key, meta, conflicts)
  end
  session_written(key, bucket, log, now_ms())
  return tonumber(version)
end
