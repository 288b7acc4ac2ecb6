-- lib/expiry.lua: a session's expiry deadline and its entry in the slot's expiry index.
--
-- Field "x" of a session hash is its fixed deadline (ms, server clock: an absolute age, a
-- daily boundary, or when Python re-checks a custom rule); field "y" is
-- "mode|idle ms|message limit|grace ms|rule|lead ms" (mode "any", "all" or "py"), written by
-- expiry_arm.lua. A session without "y" has no rule and costs one absent field per write.
-- Field "w" is the progress of the rule's stages at one deadline (expiry_act.lua):
-- "<due>:<k>" stages 1..k are done; "<due>:*" every stage ran and left the session in place
-- (notify, suspend, a merge with no target): that deadline is spent, and no reader takes the
-- session as past it. A new deadline (new activity moved it, a message limit moved on) no
-- longer matches: the rule is live again.
-- sessioncache/expiry/policies.py due_at() is the Python twin; a test checks they agree.

-- The deadline (ms) of a session from its stored x, y, last activity a and message count m
-- (numbers), or nil: "any" takes the earliest part, "all" the latest once every usage part
-- is reached. Daily grace: active within `grace` before the boundary x, the session is due
-- at its next idle gap of `grace` instead.
local function expiry_due(x, y, a, m)
  if not y then
    return nil
  end
  local mode, idle, limit, grace = string.match(y, '^(%a+)|(%d*)|(%d*)|(%d*)|')
  local fixed = tonumber(x)
  if mode == 'py' then
    return fixed
  end
  local parts = {}
  if fixed then
    local g = tonumber(grace)
    if g and g > 0 and a >= fixed - g then
      fixed = math.max(fixed, a + g)
    end
    parts[#parts + 1] = fixed
  end
  if idle ~= '' then
    parts[#parts + 1] = a + tonumber(idle)
  end
  if limit ~= '' then
    if m >= tonumber(limit) then
      parts[#parts + 1] = a
    elseif mode == 'all' then
      return nil
    end
  end
  if #parts == 0 then
    return nil
  end
  local due = parts[1]
  for i = 2, #parts do
    if mode == 'any' then
      due = math.min(due, parts[i])
    else
      due = math.max(due, parts[i])
    end
  end
  return due
end

-- Whether field w marks the deadline `due` spent: its stages all ran, the session stayed.
local function expiry_spent(w, due)
  return w and w == int(due) .. ':*'
end

-- On access, before new activity is recorded: whether the session is past its deadline at
-- `now` (w: its field w; a spent deadline is not passed again). Rules decided in Python
-- ("py") never block a write here.
local function expiry_passed(x, y, a, m, now, w)
  if not y or string.sub(y, 1, 3) == 'py|' then
    return false
  end
  local due = expiry_due(x, y, tonumber(a), tonumber(m))
  return due ~= nil and now >= due and not expiry_spent(w, due)
end

-- A deleted session leaves the expiry index (`index` may be nil, as above).
local function expiry_forget(index, key)
  if index then
    redis.call('ZREM', index, key)
  end
end

-- After a write: the session `key` (fields x, y, a, m, w as now stored) sits in the expiry
-- index at its first stage time (deadline minus the warning lead), or leaves it (no deadline,
-- or a spent one). `index` may be nil (a store without expiry rules passes no index key).
local function expiry_index(index, key, x, y, a, m, w)
  if not index or not y then
    return
  end
  local due = expiry_due(x, y, tonumber(a), tonumber(m))
  if due and not expiry_spent(w, due) then
    local lead = tonumber(string.match(y, '|(%d*)$')) or 0
    redis.call('ZADD', index, int(due - lead), key)
  else
    redis.call('ZREM', index, key)
  end
end
