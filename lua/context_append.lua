-- context_append.lua: append one message to a session's history, trimming to the caps.
--
-- KEYS[1]  session hash (must exist: its 'c' field is the context's generation)
-- KEYS[2]  context hash: '#g' generation, '#v' schema version, '#n' last message number,
--          '#b' bytes and '#t' tokens held by the history, '#o' recent op ids, '#e' the
--          expiry last given to both context keys
-- KEYS[3]  history list, oldest first; each item is "<n>|<tokens>|<ms>|<payload>"
-- ARGV[1]  op id (5 chars; a client retry of the same call appends nothing twice)
-- ARGV[2]  token count of the message ("" if unknown: counts as 0)
-- ARGV[3]  payload (the encoded role, content and metadata)
-- ARGV[4..6]  soft caps: messages, bytes, tokens ("0" = no cap); past them 'over' is reported
-- ARGV[7..9]  hard caps: messages, bytes, tokens; past them the oldest items are dropped
-- ARGV[10] context schema version
-- ARGV[11] ms the context outlives the session's current expiry
--
-- Returns {n, over, dropped, ms}: the message's number, 1 if a soft cap is exceeded (a summary
-- is due), how many old items were dropped and the server time it was stored at (the time of
-- the retry when this call is a retry); {-1} if the session does not exist.
-- At most 1000 items are dropped per call, so a lowered cap catches up over several calls.

local gen = context_gen(KEYS[1])
if not gen then
  return {-1}
end
local now = now_ms()
local cur = redis.call('HMGET', KEYS[2], '#o', '#n', '#b', '#t', '#e', '#g')
if context_claim(KEYS[2], KEYS[3], gen, ARGV[10], cur[6]) then
  cur = {}
end
local ops = cur[1] or ''
local done = op_result(ops, ARGV[1])
if done then
  return {tonumber(done), 0, 0, now}
end

-- Counters are read once and written once: fewer calls on the hottest write.
local n = tonumber(cur[2] or '0') + 1
local item = int(n) .. '|' .. ARGV[2] .. '|' .. int(now) .. '|' .. ARGV[3]
local len = redis.call('RPUSH', KEYS[3], item)
local last_exp = cur[5]
if len == 1 then
  last_exp = nil  -- a new list has no expiry yet, whatever '#e' says
end
local bytes = tonumber(cur[3] or '0') + #item
local toks = tonumber(cur[4] or '0') + (tonumber(ARGV[2]) or 0)

local function over(count, b, tk, first)
  local cn, cb, ct = tonumber(ARGV[first]), tonumber(ARGV[first + 1]), tonumber(ARGV[first + 2])
  return (cn > 0 and count > cn) or (cb > 0 and b > cb) or (ct > 0 and tk > ct)
end

local dropped = 0
while len > 1 and dropped < 1000 and over(len, bytes, toks, 7) do
  local old = redis.call('LPOP', KEYS[3])
  bytes = bytes - #old
  toks = toks - item_tokens(old)
  len = len - 1
  dropped = dropped + 1
end

local exp = context_expire(KEYS[1], KEYS[2], KEYS[3], ARGV[11], last_exp)
redis.call('HSET', KEYS[2], '#n', int(n), '#b', int(bytes), '#t', int(toks),
           '#o', op_result_pushed(ops, ARGV[1], int(n), 16), '#e', exp or '')
return {n, over(len, bytes, toks, 4) and 1 or 0, dropped, now}
