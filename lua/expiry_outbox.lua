-- expiry_outbox.lua: claim or acknowledge effects in an expiry outbox (see expiry_act.lua).
--
-- KEYS[1]  the effect outbox of one slot (zset: effect -> when it may be claimed, ms)
-- ARGV[1]  "claim": take up to ARGV[2] entries whose time has come, each claimed for ARGV[3]
--          ms (a claimer that dies before its ack leaves them to the next claim after that),
--          only entries whose kind (the first character: "n" notify, "f" archive file) is one
--          of ARGV[4]: a process that cannot perform an effect never takes it from one that can.
--          At most 4 * ARGV[2] due entries are looked at in one call (bounded);
--          "ack": drop the entries ARGV[2..], their effects done
--
-- Returns the entries claimed (claim), or how many were dropped (ack). A retried ack drops
-- nothing more; a retried claim finds its entries claimed and returns the next ones.

local box = KEYS[1]
if ARGV[1] == 'ack' then
  local n = 0
  for i = 2, #ARGV do
    n = n + redis.call('ZREM', box, ARGV[i])
  end
  return n
end
local now = now_ms()
local batch, kinds = tonumber(ARGV[2]), ARGV[4]
local due = redis.call('ZRANGEBYSCORE', box, '-inf', now, 'LIMIT', 0, 4 * batch)
local until_ms = int(now + tonumber(ARGV[3]))
local taken = {}
for i = 1, #due do
  if #taken >= batch then
    break
  end
  if string.find(kinds, string.sub(due[i], 1, 1), 1, true) then
    redis.call('ZADD', box, until_ms, due[i])
    taken[#taken + 1] = due[i]
  end
end
return taken
