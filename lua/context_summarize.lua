-- context_summarize.lua: hand the oldest messages to one summarizer, then swap in its summary.
--
-- KEYS[1]  context hash ('#s': the live claim "<token>|<deadline ms>"; '#d': last applied token)
-- KEYS[2]  history list (items "<n>|<tokens>|<ms>|<payload>", oldest first)
-- ARGV[1]  "claim", "apply" or "release"
-- ARGV[2]  the summarizer's token
-- claim:   ARGV[3] claim lease in ms; ARGV[4..6] target caps (messages, bytes, tokens; "0" no
--          cap): the oldest items are claimed until what is left fits them.
--          Returns {k, item1..itemk}: k = 0 if nothing is due or another claim is live.
-- apply:   ARGV[3] k, ARGV[4] first claimed item, ARGV[5] last claimed item,
--          ARGV[6] summary payload, ARGV[7] the summary's token count ("" if unknown).
--          The k oldest items are replaced by the summary only if they are still exactly the
--          claimed ones and the claim is still ours. Returns 1 applied (also on a retry of
--          the call that applied), 0 refused.
-- release: drops our claim (the hook failed). Returns 1.

local now = now_ms()
local token = ARGV[2]
local claim = redis.call('HGET', KEYS[1], '#s')
local owner, deadline
if claim then
  owner, deadline = string.match(claim, '^(.*)|(%d+)$')
  deadline = tonumber(deadline)
end

if ARGV[1] == 'release' then
  if owner == token then
    redis.call('HDEL', KEYS[1], '#s')
  end
  return 1
end

if ARGV[1] == 'claim' then
  if owner and owner ~= token and deadline > now then
    return {0}
  end
  local cn, cb, ct = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local len = redis.call('LLEN', KEYS[2])
  local bytes = tonumber(redis.call('HGET', KEYS[1], '#b') or '0')
  local toks = tonumber(redis.call('HGET', KEYS[1], '#t') or '0')
  local items = {}
  -- Bounded: at most 1000 items per summary.
  while #items < 1000 and #items < len - 1 and
      ((cn > 0 and len - #items > cn) or (cb > 0 and bytes > cb) or (ct > 0 and toks > ct)) do
    local item = redis.call('LINDEX', KEYS[2], #items)
    items[#items + 1] = item
    bytes = bytes - #item
    toks = toks - item_tokens(item)
  end
  if #items == 0 then
    return {0}
  end
  redis.call('HSET', KEYS[1], '#s', token .. '|' .. int(now + tonumber(ARGV[3])))
  local out = {#items}
  for i = 1, #items do
    out[i + 1] = items[i]
  end
  return out
end

-- apply
if redis.call('HGET', KEYS[1], '#d') == token then
  return 1
end
if owner ~= token then
  return 0
end
local k = tonumber(ARGV[3])
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[4] or redis.call('LINDEX', KEYS[2], k - 1) ~= ARGV[5] then
  redis.call('HDEL', KEYS[1], '#s')
  return 0
end
local freed_bytes, freed_toks = 0, 0
for _, item in ipairs(redis.call('LRANGE', KEYS[2], 0, k - 1)) do
  freed_bytes = freed_bytes + #item
  freed_toks = freed_toks + item_tokens(item)
end
-- Trimming every item deletes the list: the one the summary starts keeps its expiry.
local exp = redis.call('PEXPIRETIME', KEYS[2])
redis.call('LTRIM', KEYS[2], k, -1)
local n = redis.call('HINCRBY', KEYS[1], '#n', 1)
local summary = int(n) .. '|' .. ARGV[7] .. '|' .. int(now) .. '|' .. ARGV[6]
redis.call('LPUSH', KEYS[2], summary)
if exp > 0 then
  redis.call('PEXPIREAT', KEYS[2], exp)
end
redis.call('HINCRBY', KEYS[1], '#b', #summary - freed_bytes)
redis.call('HINCRBY', KEYS[1], '#t', (tonumber(ARGV[7]) or 0) - freed_toks)
redis.call('HDEL', KEYS[1], '#s')
redis.call('HSET', KEYS[1], '#d', token)
return 1
