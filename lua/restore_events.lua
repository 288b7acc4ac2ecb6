-- restore_events.lua: replace a session's event stream with the entries of a backup.
--
-- KEYS[1]  the session's event stream
-- ARGV[1]  absolute expiry of the stream in ms since the epoch, "0" for none
-- ARGV[2..] the entries, oldest first, each as: entry id "<ms>-<seq>" (canonical decimal,
--          strictly increasing, above 0-0), the number k of values that follow (even, >= 2),
--          then k values: field, value, field, value, ... (bytes as stored)
--
-- The client checked the record (persistence/backup.py check_record): at most 10000 entries
-- and at most 7900 values per entry, so each XADD's unpack() stays under Lua's 8000 limit and
-- the script's time is bounded. The layout is checked again here before the first write, so
-- malformed arguments change nothing.
--
-- Returns the number of entries written, or -1 when the expiry has already passed (nothing
-- written: a live stream is left alone). DEL, then XADD with the backup's own ids, then
-- PEXPIREAT: running it twice gives the same stream.

local key = KEYS[1]
local exp = tonumber(ARGV[1])
if not exp or exp < 0 then
  return redis.error_reply('restore_events: bad expiry')
end
if has_passed(exp) then return -1 end

-- Decimal strings without leading zeros compare by length, then as text (no float rounding).
local function above(a, b)
  if #a ~= #b then
    return #a > #b
  end
  return a > b
end

local n = #ARGV
local i = 2
local count = 0
local last_ms, last_seq = '0', '0'
while i <= n do
  local ms, seq = string.match(ARGV[i], '^(%d+)%-(%d+)$')
  local k = i < n and tonumber(ARGV[i + 1])
  if not ms or not k or k < 2 or k % 2 ~= 0 or i + 1 + k > n
      or string.match(ms, '^0%d') or string.match(seq, '^0%d')
      or not (above(ms, last_ms) or (ms == last_ms and above(seq, last_seq))) then
    return redis.error_reply('restore_events: malformed entry at argument ' .. i)
  end
  last_ms, last_seq = ms, seq
  count = count + 1
  i = i + 2 + k
end

redis.call('DEL', key)
i = 2
while i <= n do
  local k = tonumber(ARGV[i + 1])
  redis.call('XADD', key, ARGV[i], unpack(ARGV, i + 2, i + 1 + k))
  i = i + 2 + k
end
if exp > 0 and count > 0 then
  redis.call('PEXPIREAT', key, ARGV[1])
end
return count
