-- lib/ops.lua: op ids, so a client retry of a write that already ran is not applied twice.
--
-- Field "o" of a hash holds the op ids (5 characters each) of its last four writes.

-- Whether `opid` is among the recorded ids `ops`.
local function op_seen(ops, opid)
  for i = 1, #ops, 5 do
    if string.sub(ops, i, i + 4) == opid then
      return true
    end
  end
  return false
end

-- The value of field "o" once `opid` is recorded in front of `ops`.
local function op_pushed(ops, opid)
  return string.sub(opid .. ops, 1, 20)
end

-- Op ids that remember their call's result, "<opid>=<result>," for the last `keep` calls: a
-- retry of a call that already ran gets that result back (nil if `opid` is not recorded).
local function op_result(ops, opid)
  local at = string.find(ops, opid .. '=', 1, true)
  return at and string.match(ops, '^([^,]*)', at + #opid + 1)
end

-- `ops` with `opid` and its `result` recorded, the oldest dropped past `keep` entries.
local function op_result_pushed(ops, opid, result, keep)
  ops = ops .. opid .. '=' .. result .. ','
  local _, count = string.gsub(ops, ',', ',')
  if count > keep then
    ops = string.sub(ops, string.find(ops, ',', 1, true) + 1)
  end
  return ops
end
