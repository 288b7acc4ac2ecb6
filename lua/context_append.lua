-- context_append.lua: append one message to a session's history, trimming to the caps.
--
-- KEYS[1]  session hash (must exist: its 'c' field is the context's generation)
-- KEYS[2]  context hash: '#g' generation, '#v' schema version, '#n' last message number,
--          '#b' bytes and '#t' tokens held by the history
-- KEYS[3]  history list, oldest first; each item is "<n>|<tokens>|<ms>|<payload>"
-- KEYS[4]  op log of the session (lib/ops.lua; a retry gets its message number back)
-- ARGV[1..3]  op id, call digest, retry horizon in ms (lib/ops.lua)
-- ARGV[4]  token count of the message ("" if unknown: counts as 0)
-- ARGV[5]  payload (the encoded role, content and metadata)
-- ARGV[6..8]  soft caps: messages, bytes, tokens ("0" = no cap); past them 'over' is reported
-- ARGV[9..11] hard caps: messages, bytes, tokens; past them the oldest items are dropped
-- ARGV[12] context schema version
-- The context keys take the session's expiry (lib/context.lua).
--
-- Returns {n, over, dropped, ms}: the message's number, 1 if a soft cap is exceeded (a summary
-- is due), how many old items were dropped and the server time it was stored at (the time of
-- the retry when this call is a retry); {-1} if the session does not exist.
-- At most 1000 items are dropped per call, so a lowered cap catches up over several calls.

local gen = context_gen(KEYS[1])
if not gen then return {-1} end
-- One read of the counters and one write of them at the end, rather than an HINCRBY per
-- counter and per dropped item: the script runs alone, so nothing changes them in between.
local held = redis.call('HMGET', KEYS[2], '#g', '#n', '#b', '#t')
local n, bytes, toks = tonumber(held[2]) or 0, tonumber(held[3]) or 0, tonumber(held[4]) or 0
if context_claim(KEYS[2], KEYS[3], gen, ARGV[12], held[1]) then
  n, bytes, toks = 0, 0, 0
end

local now = now_ms()
local done, number = op_applied(KEYS[4])
if done then
  return {tonumber(number), 0, 0, now}
end

n = n + 1
local item = int(n) .. '|' .. ARGV[4] .. '|' .. int(now) .. '|' .. ARGV[5]
local len = redis.call('RPUSH', KEYS[3], item)
bytes = bytes + #item
toks = toks + (tonumber(ARGV[4]) or 0)

local function over(count, b, tk, first)
  local cn, cb, ct = tonumber(ARGV[first]), tonumber(ARGV[first + 1]), tonumber(ARGV[first + 2])
  return (cn > 0 and count > cn) or (cb > 0 and b > cb) or (ct > 0 and tk > ct)
end

local dropped = 0
while len > 1 and dropped < 1000 and over(len, bytes, toks, 9) do
  local old = redis.call('LPOP', KEYS[3])
  bytes = bytes - #old
  toks = toks - item_tokens(old)
  len = len - 1
  dropped = dropped + 1
end
redis.call('HSET', KEYS[2], '#n', int(n), '#b', int(bytes), '#t', int(toks))

op_record(KEYS[4], now, int(n))
follow_expiry(KEYS[1], KEYS[2], KEYS[3])
return {n, over(len, bytes, toks, 6) and 1 or 0, dropped, now}
