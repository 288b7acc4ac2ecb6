-- lib/rows.lua: a hash read once with HGETALL, patched in Lua into the reply after a write.
--
-- A script that replies with the whole hash after writing it (update.lua, record_merge.lua)
-- reads it once up front, takes what it checks from it, and builds the reply from it instead
-- of a second HGETALL: one command and one reply conversion less. Existing rows keep their
-- place, new fields go last, as in Redis' own small hashes (a client builds a dict anyway).

-- The index of an HGETALL reply: field -> position of its value in `flat`.
local function rows_index(flat)
  local at = {}
  for i = 1, #flat, 2 do
    at[flat[i]] = i + 1
  end
  return at
end

-- `flat` (indexed by `at`) after HDEL of the fields in `gone` (field -> true) and then HSET of
-- `fields` (field, value, ...), so a field both deleted and set stays, set. Returns the new
-- rows (`flat` itself, changed, when nothing is deleted); `at` and `gone` are used up.
local function rows_apply(flat, at, fields, gone)
  for i = 1, #fields, 2 do
    local name = fields[i]
    gone[name] = nil
    if at[name] then
      flat[at[name]] = fields[i + 1]
    else
      flat[#flat + 1] = name
      flat[#flat + 1] = fields[i + 1]
      at[name] = #flat
    end
  end
  if next(gone) == nil then
    return flat
  end
  local kept = {}
  for i = 1, #flat, 2 do
    if not gone[flat[i]] then
      kept[#kept + 1] = flat[i]
      kept[#kept + 1] = flat[i + 1]
    end
  end
  return kept
end
