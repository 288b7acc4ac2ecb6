-- lib/transit.lua: moving a session to another state, as the fleet's transition table allows.
--
-- (Named to sort after lib/stats.lua, whose helpers it uses: lib files are prepended in name
-- order.)

-- Whether `spec` (transition.lua's ARGV[7], as below) allows a session in state `from` to move
-- to its target.
local function state_allows(spec, from)
  local sources = string.match(spec, '(%S+)$')
  return string.find(sources, ',' .. from .. ',', 1, true) ~= nil
end

-- Move the session `key` (cur: its fields v, s, c, m as read) to `target` if `spec` allows it:
-- spec is transition.lua's ARGV[7] (platform, table version, stream caps, terminal states, and
-- the states allowed to move to the target). Writes state, version and update time, one
-- state_changed event (`reason`: encoded, or '' for none) and the shard's counters in `stats`.
-- Returns the state moved from, or nil when the table does not allow it (nothing written).
local function state_move(key, stream, stats, cur, target, spec, reason, now)
  local plat, tver, maxlen, maxage, terminal =
    string.match(spec, '^(%S+) (%d+) (%d+) (%d+) (%S+) %S+$')
  local from = cur[2]
  if not state_allows(spec, from) then
    return nil
  end
  local vs = int(tonumber(cur[1]) + 1)
  redis.call('HSET', key, 's', target, 'v', vs, 'u', int(now))
  local entry = {'t', 'state_changed', 'f', from, 's', target, 'v', vs, 'x', tver}
  if reason ~= '' then
    entry[#entry + 1] = 'r'
    entry[#entry + 1] = reason
  end
  append_event(stream, maxlen, maxage, now, true, entry)
  redis.call('HINCRBY', stats, 'n:' .. plat .. ':' .. from, -1)
  redis.call('HINCRBY', stats, 'n:' .. plat .. ':' .. target, 1)
  redis.call('HINCRBY', stats, 'tr:' .. from .. '>' .. target, 1)
  count_event(stats, 'state_changed', now)
  if string.find(terminal, ',' .. target .. ',', 1, true)
      and not string.find(terminal, ',' .. from .. ',', 1, true) then
    -- Ending a live session: duration and messages go into log2 histograms (4 per octave).
    local dur = now - tonumber(cur[3])
    if dur < 0 then dur = 0 end
    local msgs = tonumber(cur[4])
    redis.call('HINCRBY', stats, 'ended', 1)
    redis.call('HINCRBY', stats, 'dsum', int(dur))
    redis.call('HINCRBY', stats, 'msum', int(msgs))
    redis.call('HINCRBY', stats, 'd:' .. int(log_bucket(dur)), 1)
    redis.call('HINCRBY', stats, 'mb:' .. int(log_bucket(msgs)), 1)
  end
  return from
end
