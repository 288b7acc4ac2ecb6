-- lib/period.lua: the period of a session's expiry rule, and its new start at a restore.
--
-- A rule counts from the start of its period: the session's creation, or its latest restore
-- from the archive (docs/expiry.md, "restore"). Its deadline fields hold what the period makes
-- of the rule (lib/expiry.lua): x an absolute time (absolute age, daily boundary), the message
-- limit in y an absolute count (the messages at the start + the rule's own limit). Field "b"
-- records where the period began: "<start ms>|<messages then>|<token counts then>" (the third
-- part, a JSON object of token counts by metadata name, is written by Python's arm(): Lua does
-- not read metadata). No "b": the period began at creation, with no message (an empty start:
-- at creation too, a message limit since moved on). Only the restoring script, arm() and a
-- message limit spent with the session in place (period_spent) write it; the write scripts
-- never read it, so it costs them nothing. sessioncache/expiry/policies.py Period is the
-- Python twin; a test checks both agree.

-- The message limit in y counted anew from `m` messages: the rule's own limit (the one in y
-- less the messages at the period's start, field b `b`) added to m, written to y. Returns y as
-- now stored (unchanged when it has no message limit). The one rule for moving a limit on: a
-- restore (period_restart) and a limit reached with the session left in place (period_spent).
local function period_count_from(key, y, m, b)
  local head, limit, tail = string.match(y, '^(%a+|%d*|)(%d+)(|.*)$')
  if not limit then
    return y
  end
  local base = tonumber(string.match(b or '', '^%d*|(%d+)|')) or 0
  y = head .. int(tonumber(m) + tonumber(limit) - base) .. tail
  redis.call('HSET', key, 'y', y)
  return y
end

-- A restore starts the session's period anew at `now`: the spent fixed deadline x and the
-- stage progress w go (arm() writes the new x), the message limit in y moves on by the messages
-- of the spent period, so it counts from the restored message count, and b records the new
-- start. Leaves data, metadata, state, version and message count as they are. Returns the
-- session's fields y and m as now stored (for expiry_index; x is gone).
local function period_restart(key, now)
  local cur = redis.call('HMGET', key, 'y', 'm', 'b')
  local y, m = cur[1], cur[2]
  redis.call('HDEL', key, 'x', 'w')
  if y then
    y = period_count_from(key, y, m, cur[3])
  end
  redis.call('HSET', key, 'b', int(now) .. '|' .. m .. '|')
  return y, m
end

-- Every stage of the rule's deadline ran at `now` and left the session `key` in place (its
-- fields x, y, a, m as stored; notify, suspend, a merge with no target): the rule is spent for
-- that deadline, not for good. What passed is done: a fixed deadline x that has passed goes
-- (an absolute age fires once), or becomes the first of `nexts` (the next daily boundaries,
-- space-separated, from the caller) still ahead; a message limit reached counts anew from the
-- message count, as at a restore (period_count_from; b keeps its start, "" for creation, and
-- records the messages). Rules decided in Python ("py") keep x: a concurrent "now" finds
-- it spent. Then the deadline the rule still gives, if it has passed too (an idle deadline
-- until new activity), is marked spent in w ("<due>:*") and leaves the index; otherwise w goes
-- and the session waits in the index for its next deadline (lib/expiry.lua). Running it again
-- finds the limit not reached and the mark in place: it changes nothing more.
local function period_spent(index, key, x, y, a, m, now, nexts)
  local fixed = nil
  for at in string.gmatch(nexts or '', '%d+') do
    if not fixed and tonumber(at) > now then
      fixed = at
    end
  end
  if fixed then
    x = fixed
    redis.call('HSET', key, 'x', x)
  elseif x and tonumber(x) <= now and string.sub(y, 1, 3) ~= 'py|' then
    x = nil
    redis.call('HDEL', key, 'x')
  end
  local limit = tonumber(string.match(y, '^%a+|%d*|(%d+)|'))
  if limit and tonumber(m) >= limit then
    local b = redis.call('HGET', key, 'b')
    y = period_count_from(key, y, m, b)
    local start, tokens = string.match(b or '', '^(%d*)|%d*|(.*)$')
    redis.call('HSET', key, 'b', (start or '') .. '|' .. m .. '|' .. (tokens or ''))
  end
  local due = expiry_due(x, y, tonumber(a), tonumber(m))
  if due and due <= now then
    redis.call('HSET', key, 'w', int(due) .. ':*')
    redis.call('ZREM', index, key)
  else
    redis.call('HDEL', key, 'w')
    expiry_index(index, key, x, y, a, m)
  end
end
