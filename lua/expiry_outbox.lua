-- expiry_outbox.lua: claim, keep or acknowledge effects in an expiry outbox (expiry_act.lua).
--
-- KEYS[1]  the effect outbox of one slot (zset: effect -> when it may be claimed, ms)
-- ARGV[1]  "claim": take up to ARGV[2] entries whose time has come, each claimed for ARGV[3]
--          ms (a claimer that dies before its ack leaves them to the next claim after that),
--          only entries whose kind (the first character: "n" notify, "f" archive file) is one
--          of ARGV[4]: a process that cannot perform an effect never takes it from one that can.
--          At most 4 * ARGV[2] due entries are looked at in one call (bounded);
--          "extend": the caller still performs the entries ARGV[3..] (claimed by it): each
--          still claimed (its time not come) is claimed for ARGV[2] ms from now, unless it
--          already is for longer. An entry acknowledged (gone) is not written back, one whose
--          claim lapsed is not taken back (another process may have claimed it since);
--          "ack": drop the entries ARGV[2..], their effects done
--
-- Returns claim: the entries claimed; extend: the entries of ARGV[3..] still claimed; ack: how
-- many were dropped. A retried claim finds its entries claimed and returns the next ones; a
-- retried extend extends again; a retried ack drops nothing more.

local box, mode = KEYS[1], ARGV[1]
if mode == 'ack' then
  local n = 0
  for i = 2, #ARGV do
    n = n + redis.call('ZREM', box, ARGV[i])
  end
  return n
end
local now = now_ms()
if mode == 'extend' then
  local until_ms = now + tonumber(ARGV[2])
  local held = {}
  for i = 3, #ARGV do
    local at = tonumber(redis.call('ZSCORE', box, ARGV[i]) or '')
    if at and at > now then
      if at < until_ms then
        redis.call('ZADD', box, 'XX', int(until_ms), ARGV[i])
      end
      held[#held + 1] = ARGV[i]
    end
  end
  return held
end
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
