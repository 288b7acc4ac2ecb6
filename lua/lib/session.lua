-- lib/session.lua: what every write of a session keeps in step: expiry, user index, changes.

-- The user index must outlive every session it lists: its expiry only ever moves later. An
-- index with no expiry lists (or listed) a session that never expires, so it keeps none until
-- it is emptied; a new index takes its first session's expiry. `exps` is the session's expiry
-- (ms since the epoch, as a string) or nil for none; `suffix`, when given, is added first.
local function index_keep(index, exps, suffix)
  if suffix then
    local fresh = redis.call('EXISTS', index) == 0
    redis.call('HSET', index, suffix, '1')
    if fresh and exps then
      redis.call('PEXPIREAT', index, exps)
      return
    end
  end
  if exps then
    -- GT treats a key with no expiry as expiring never: it is left without one.
    redis.call('PEXPIREAT', index, exps, 'GT')
  else
    redis.call('PERSIST', index)
  end
end

-- The session `key` now expires at `exps` (ms since the epoch, string; nil: never), and its
-- user index follows (`suffix`: the session's entry, to add), and so do its context keys
-- `ctx`, `hist` when the caller names them. Every write of a session sets its expiry here, so
-- a rule that must follow every session's expiry belongs in this function.
local function expire_session(key, index, exps, suffix, ctx, hist)
  expire_at(key, exps)
  index_keep(index, exps, suffix)
  context_follow(ctx, hist, exps)
end

-- Change index for incremental backups (see docs/persistence.md): `key` changed. Recorded only
-- while a backup chain has armed this slot's bucket with its '#' counter; `bucket` may be nil.
local function mark_changed(bucket, key)
  if bucket and redis.call('ZSCORE', bucket, '#') then
    redis.call('ZADD', bucket, redis.call('ZINCRBY', bucket, 1, '#'), key)
  end
end

-- How every applied write of session `key` ends: the change index, and the call's op record
-- in `log` (lib/ops.lua), so no attempt of this call applies again.
local function session_written(key, bucket, log, now)
  mark_changed(bucket, key)
  op_record(log, now)
end

-- An applied write that sets `fields` (field, value, ...) and moves the session's expiry to
-- `exps` (`suffix`: also add the session to its user index; `ctx`, `hist`: its context keys,
-- which follow), then ends as session_written.
local function session_update(key, index, bucket, log, fields, exps, now, suffix, ctx, hist)
  redis.call('HSET', key, unpack(fields))
  expire_session(key, index, exps, suffix, ctx, hist)
  session_written(key, bucket, log, now)
end

-- How many data + metadata fields session `key` holds, as Limits.max_fields counts them:
-- one-character names are the session's own fields and do not count ("o" held op ids before
-- the op log: sessions written by older versions may have it).
local function session_field_count(key)
  local total = redis.call('HLEN', key)
  local core = redis.call('HMGET', key, 'v', 's', 'c', 'u', 'a', 'e', 'm', 'p', 't', 'o',
                          'x', 'y', 'w')
  for i = 1, #core do
    if core[i] then
      total = total - 1
    end
  end
  return total
end

-- Optimistic concurrency: `expected` is the version the caller last saw ('' to write whatever
-- is stored); true when the stored `version` has moved on since, and nothing may be written.
local function version_moved(expected, version)
  return expected ~= '' and tonumber(expected) ~= version
end
