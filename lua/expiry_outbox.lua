-- expiry_outbox.lua: claim, keep or acknowledge effects in an expiry outbox (expiry_act.lua).
--
-- KEYS[1]  the effect outbox of one slot (zset: effect -> when it may be claimed, ms)
-- KEYS[2]  its notice queues (hash, lib/outbox.lua: a session's notices, in the order written)
-- ARGV[1]  "claim": take up to ARGV[2] entries whose time has come, each claimed for ARGV[3]
--          ms (a claimer that dies before its ack leaves them to the next claim after that),
--          only entries whose kind (the first character: "n" notify, "f" archive file) is one
--          of ARGV[4]: a process that cannot perform an effect never takes it from one that can.
--          A notice is taken only when it is first of its session's queue; one behind an
--          earlier notice of its session is left, its time moved on by ARGV[3] ms (out of the
--          way of the next claims): the ack of the one before hands it on. At most 4 * ARGV[2]
--          due entries are looked at in one call (bounded);
--          "extend": the caller still performs the entries ARGV[3..] (claimed by it): each
--          still claimed (its time not come) is claimed for ARGV[2] ms from now, unless it
--          already is for longer. An entry acknowledged (gone) is not written back, one whose
--          claim lapsed is not taken back (another process may have claimed it since);
--          "ack": drop the entries ARGV[3..], their effects done (each from its queue too). The
--          notice next in the queue of one acknowledged first of its queue is claimed for
--          ARGV[2] ms by the caller, which performed a notice, and so performs that one next.
--
-- Returns claim: the entries claimed; extend: the entries of ARGV[3..] still claimed; ack:
-- {n dropped, {the notices handed on}}. A retried claim finds its entries claimed and returns
-- the next ones; a retried extend extends again; a retried ack drops nothing more and hands
-- nothing on (what the first one handed on is claimed by any sweep once that claim lapses).

local box, queues, mode = KEYS[1], KEYS[2], ARGV[1]
local now = now_ms()
if mode == 'claim' then
  local batch, kinds = tonumber(ARGV[2]), ARGV[4]
  local until_ms = int(now + tonumber(ARGV[3]))
  local due = redis.call('ZRANGEBYSCORE', box, '-inf', now, 'LIMIT', 0, 4 * batch)
  local taken = {}
  for i = 1, #due do
    if #taken >= batch then
      break
    end
    local entry = due[i]
    if string.find(kinds, string.sub(entry, 1, 1), 1, true) then
      redis.call('ZADD', box, until_ms, entry)
      local item, session, items, stale = queue_of(box, queues, entry)
      if stale then
        queue_write(queues, session, items)
      end
      local first = true
      for j = 2, #(items or {}) do
        first = first and items[j] ~= item
      end
      if first then
        taken[#taken + 1] = entry
      end
    end
  end
  return taken
elseif mode == 'extend' then
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
elseif mode == 'ack' then
  local until_ms = int(now + tonumber(ARGV[2]))
  local n, handed = 0, {}
  for i = 3, #ARGV do
    local entry = ARGV[i]
    local item, session, items = queue_of(box, queues, entry)  -- before the ZREM: first?
    n = n + redis.call('ZREM', box, entry)
    if item then
      local rest = {}
      for j = 1, #items do
        if items[j] ~= item then
          rest[#rest + 1] = items[j]
        end
      end
      queue_write(queues, session, rest)
      if items[1] == item and rest[1] then
        local after = 'n|' .. rest[1] .. '|' .. session
        redis.call('ZADD', box, 'XX', until_ms, after)
        handed[#handed + 1] = after
      end
    end
  end
  return {n, handed}
end
return redis.error_reply('expiry_outbox.lua: unknown mode ' .. tostring(mode))
