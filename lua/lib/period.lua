-- lib/period.lua: the period of a session's expiry rule, and its new start at a restore.
--
-- A rule counts from the start of its period: the session's creation, or its latest restore
-- from the archive (docs/expiry.md, "restore"). Its deadline fields hold what the period makes
-- of the rule (lib/expiry.lua): x an absolute time (absolute age, daily boundary), the message
-- limit in y an absolute count (the messages at the start + the rule's own limit). Field "b"
-- records where the period began: "<start ms>|<messages then>|<token counts then>" (the third
-- part, a JSON object of token counts by metadata name, is written by Python's arm(): Lua does
-- not read metadata). No "b": the period began at creation, with no message. Only the
-- restoring script and arm() write it; the write scripts never read it, so it costs them
-- nothing. sessioncache/expiry/policies.py Period is the Python twin; a test checks both agree.

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
    local head, limit, tail = string.match(y, '^(%a+|%d*|)(%d+)(|.*)$')
    if limit then
      local base = tonumber(string.match(cur[3] or '', '^%d*|(%d+)|')) or 0
      y = head .. int(tonumber(m) + tonumber(limit) - base) .. tail
      redis.call('HSET', key, 'y', y)
    end
  end
  redis.call('HSET', key, 'b', int(now) .. '|' .. m .. '|')
  return y, m
end
