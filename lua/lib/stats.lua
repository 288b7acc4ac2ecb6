-- lib/stats.lua: event streams and the per-shard statistics counters.
--
-- The Python side of the histogram formula is sessioncache.statistics.histogram_bucket; a
-- test checks both give the same bucket for many values.

-- Histogram bucket of a value >= 0: 4 buckets per octave of (x + 1).
local function log_bucket(x)
  return math.floor(4 * math.log(x + 1) / math.log(2))
end

-- One event of type `etype` at `now` (ms) in the shard's counters: per type and per hour.
local function count_event(stats, etype, now)
  redis.call('HINCRBY', stats, 'e:' .. etype, 1)
  redis.call('HINCRBY', stats, 'h:' .. int(math.floor(now / 3600000)), 1)
end

-- Append `fields` (field, value, ...) to a session's event stream, capped at about `maxlen`
-- entries; when `trim`, also drop entries older than `maxage` ms. The stream expires `maxage`
-- ms after its last event. Returns the entry id.
local function append_event(stream, maxlen, maxage, now, trim, fields)
  local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  if trim then
    redis.call('XTRIM', stream, 'MINID', '~', int(now - tonumber(maxage)))
  end
  redis.call('PEXPIRE', stream, maxage)
  return id
end

-- One session more (delta 1) or less (-1) in the per-platform, per-state count of the shard;
-- `suffix` is the session's suffix ("<platform>:<chat>[:<thread>]").
local function count_session(stats, suffix, state, delta)
  redis.call('HINCRBY', stats, 'n:' .. string.match(suffix, '^[^:]+') .. ':' .. state, delta)
end
