-- lib/ops.lua: op ids, so a write that a client retries, or that arrives late, applies once.
--
-- Every mutating script takes the same first three ARGV, which these helpers read: the op id (16
-- random characters, 96 bits, fresh per call and repeated by each retry of it), the call digest (a hash of the call's
-- other arguments) and the retry horizon in ms (sessioncache.store.retry_horizon_ms). Its op log
-- (a zset in the key's slot, built by KeySchema.op_log) holds two members per write, both scored
-- with the server time the write was applied: the op id, and "<op id>:<digest>=<result>". One
-- write in eight, picked by its op id, drops records older than the horizon and keeps the newest
-- OP_LOG_CAP writes; the log expires one horizon after its last write. See docs/guarantees.md
-- ("Retries").

local OP_LOG_CAP = 1000

-- Whether this call was already applied: false, or true and the result it recorded ("" if
-- none). The same op id with other arguments is an error (raised, so nothing is written), never
-- "applied": that would silently drop a different write.
local function op_applied(log)
  local opid = ARGV[1]
  local at = redis.call('ZSCORE', log, opid)
  if not at then
    return false
  end
  -- Its second member has the same score: only the writes of that millisecond are read.
  local mine = opid .. ':' .. ARGV[2] .. '='
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', log, at, at)) do
    if string.sub(member, 1, #mine) == mine then
      return true, string.sub(member, #mine + 1)
    end
  end
  error('OPID_REUSED op id ' .. opid .. ' was already used by a call with other arguments')
end

-- Record this call as applied at `now` (ms), with an optional short `result` (a string a
-- retry gets back from op_applied); trim the log now and then, and keep it one horizon longer.
local function op_record(log, now, result)
  local opid, horizon = ARGV[1], ARGV[3]
  redis.call('ZADD', log, now, opid, now, opid .. ':' .. ARGV[2] .. '=' .. (result or ''))
  -- A record kept longer than promised only makes a late attempt answer "already applied",
  -- which it was, so trimming need not run on every write: one write in eight does it (the one
  -- whose op id's random last character is a multiple of 8), the others save two commands.
  if string.byte(opid, -1) % 8 == 0 then
    redis.call('ZREMRANGEBYSCORE', log, '-inf', '(' .. int(now - tonumber(horizon)))
    -- Even counts: a write's two members share a score and sort next to each other (op ids
    -- have one length), so a cut never separates them.
    redis.call('ZREMRANGEBYRANK', log, 0, -2 * OP_LOG_CAP - 1)
  end
  redis.call('PEXPIRE', log, horizon)
end
