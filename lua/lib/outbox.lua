-- lib/outbox.lua: the notices of one session leave an expiry outbox one at a time, in order.
--
-- An effect outbox (zset: entry -> when it may be claimed, ms) holds notices for the notify
-- callback, "n|<action>|<rule>|<deadline ms>:<stage>|<created ms>|<session id>", and archive-file
-- entries "f|<created ms>|<session id>". Beside it, its notice queues (hash): one field per
-- session, "<created ms>|<session id>", listing "<action>|<rule>|<deadline ms>:<stage>" of each of
-- its notices still in the outbox, in the order expiry_act.lua wrote them, joined by ",". Only the
-- first notice of a queue is ever handed to a process (written claimed by the acting call, taken by
-- a claim, or handed on by the ack of the one before it), so a session's notices are delivered in
-- the order written: an action's never before its warning's. A name whose entry is no longer in the
-- outbox is passed over when a queue is read (and dropped at its next write), so a lost entry never
-- holds back the ones behind it. Archive-file entries have no queue. expiry_act.lua writes the
-- queues (notice_queued); expiry_outbox.lua reads and trims them.

-- The queue of an outbox entry: the entry's item in it, its field in the queue hash, and the
-- items of its notices still in the outbox, first first (with whether any name was passed
-- over: the queue is then worth writing back); nil for an entry that is no notice.
local function queue_of(box, queues, entry)
  local item, session = string.match(entry, '^n|([^|]+|[^|]+|[%d:]+)|(%d+|.+)$')
  if not item then
    return nil
  end
  local items, stale = {}, false
  for name in string.gmatch(redis.call('HGET', queues, session) or '', '[^,]+') do
    if redis.call('ZSCORE', box, 'n|' .. name .. '|' .. session) then
      items[#items + 1] = name
    else
      stale = true
    end
  end
  return item, session, items, stale
end

local function queue_write(queues, session, items)
  if #items == 0 then
    redis.call('HDEL', queues, session)
  else
    redis.call('HSET', queues, session, table.concat(items, ','))
  end
end

-- Record an entry in the outbox, claimed until `claim` (ms) by the caller; a notice also goes
-- last in its session's queue. Returns whether the caller may deliver it now: an archive file,
-- or a notice first of its queue (one behind an earlier notice waits for that one's ack). An
-- entry already in the outbox (the same notice twice) stays as it is.
local function notice_queued(box, queues, entry, claim)
  if redis.call('ZSCORE', box, entry) then
    return false
  end
  -- Read before the ZADD: an old name of this entry in the queue is stale.
  local item, session, items = queue_of(box, queues, entry)
  if item then
    items[#items + 1] = item
    queue_write(queues, session, items)
  end
  redis.call('ZADD', box, claim, entry)
  return not item or #items == 1
end
