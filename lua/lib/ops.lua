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
