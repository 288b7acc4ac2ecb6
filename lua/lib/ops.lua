-- lib/ops.lua: op ids, so a write that a client retries, or that arrives late, applies once.
--
-- Every mutating script takes the same first three ARGV, which these helpers read: the op id (16
-- random characters, 96 bits, fresh per call and repeated by each retry of it), the call digest
-- (a hash of the call's other arguments) and the retry horizon in ms
-- (sessioncache.store.retry_horizon_ms). Its op log (a zset in the key's slot, built by
-- KeySchema.op_log) holds one member per write, "<op id>:<digest>=", scored with the server time
-- the write was applied; a write with a result (context_append's message number) adds a second,
-- "<op id>:<digest>=<result>", with the same score. The op id and the digest together name the
-- call: the same op id with other arguments is another call, applied as such, so a collision
-- can never make a different write look already applied. One write in eight, picked by its op
-- id, drops records older than the horizon and keeps the newest OP_LOG_CAP members; the log
-- expires one horizon after its last write. See docs/guarantees.md ("Retries").

local OP_LOG_CAP = 1000

-- This call's member in the op log (the one a lookup finds).
local function op_member()
  return ARGV[1] .. ':' .. ARGV[2] .. '='
end

-- Whether this call was already applied: false, or true and the result it recorded ("" if
-- none).
local function op_applied(log)
  local mine = op_member()
  local at = redis.call('ZSCORE', log, mine)
  if not at then
    return false
  end
  -- A result is a second member with the same score: only the writes of that ms are read.
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', log, at, at)) do
    if #member > #mine and string.sub(member, 1, #mine) == mine then
      return true, string.sub(member, #mine + 1)
    end
  end
  return true, ''
end

-- Record this call as applied at `now` (ms), with an optional short `result` (a string a
-- retry gets back from op_applied); trim the log now and then, and keep it one horizon longer.
local function op_record(log, now, result)
  local horizon, mine = ARGV[3], op_member()
  if result and result ~= '' then
    redis.call('ZADD', log, now, mine, now, mine .. result)
  else
    redis.call('ZADD', log, now, mine)
  end
  -- A record kept longer than promised only makes a late attempt answer "already applied",
  -- which it was, so trimming need not run on every write: one write in eight does it (the one
  -- whose op id's random last character is a multiple of 8), the others save two commands.
  if string.byte(ARGV[1], -1) % 8 == 0 then
    redis.call('ZREMRANGEBYSCORE', log, '-inf', '(' .. int(now - tonumber(horizon)))
    -- A cut between a write's two members (same score: the one a lookup finds sorts first)
    -- only drops that oldest write's record early, as the cap does anyway.
    redis.call('ZREMRANGEBYRANK', log, 0, -OP_LOG_CAP - 1)
  end
  redis.call('PEXPIRE', log, horizon)
end
