-- context_append.lua: append one message to a session's history, trimming to the caps.
--
-- KEYS[1]  session hash (must exist: its 'c' field is the context's generation)
-- KEYS[2]  context hash: '#g' generation, '#v' schema version, '#n' last message number,
--          '#b' bytes and '#t' tokens held by the history, '#o' recent op ids
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

local gen = redis.call('HGET', KEYS[1], 'c')
if not gen then
  return {-1}
end
if redis.call('HGET', KEYS[2], '#g') ~= gen then
  -- A context left by an earlier session of the same identity (deleted, expired) is dropped.
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[2], '#g', gen, '#v', ARGV[10], '#n', '0', '#b', '0', '#t', '0')
end

local opid = ARGV[1]
local ops = redis.call('HGET', KEYS[2], '#o') or ''
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = string.find(ops, opid .. '=', 1, true)
if at then
  return {tonumber(string.match(ops, '^(%d+)', at + 6)), 0, 0, now}
end
local n = redis.call('HINCRBY', KEYS[2], '#n', 1)
local tokens = tonumber(ARGV[2]) or 0
local item = string.format('%d|%s|%d|', n, ARGV[2], now) .. ARGV[3]
local len = redis.call('RPUSH', KEYS[3], item)
local bytes = redis.call('HINCRBY', KEYS[2], '#b', #item)
local toks = redis.call('HINCRBY', KEYS[2], '#t', tokens)

local function over(count, b, tk, first)
  local cn, cb, ct = tonumber(ARGV[first]), tonumber(ARGV[first + 1]), tonumber(ARGV[first + 2])
  return (cn > 0 and count > cn) or (cb > 0 and b > cb) or (ct > 0 and tk > ct)
end

local dropped = 0
while len > 1 and dropped < 1000 and over(len, bytes, toks, 7) do
  local old = redis.call('LPOP', KEYS[3])
  local oldtok = tonumber(string.match(old, '^%d+|(%d*)|')) or 0
  bytes = redis.call('HINCRBY', KEYS[2], '#b', -#old)
  toks = redis.call('HINCRBY', KEYS[2], '#t', 0 - oldtok)  -- never '-0': not an integer to Redis
  len = len - 1
  dropped = dropped + 1
end

-- Keep the last 16 op ids: enough for any client retry, bounded in size.
ops = ops .. opid .. '=' .. n .. ','
local _, count = string.gsub(ops, ',', ',')
if count > 16 then
  ops = string.sub(ops, string.find(ops, ',', 1, true) + 1)
end
redis.call('HSET', KEYS[2], '#o', ops)

local exp = redis.call('PEXPIRETIME', KEYS[1])
if exp > 0 then
  exp = exp + tonumber(ARGV[11])
  redis.call('PEXPIREAT', KEYS[2], exp)
  redis.call('PEXPIREAT', KEYS[3], exp)
end
return {n, over(len, bytes, toks, 4) and 1 or 0, dropped, now}
