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
-- user index follows (`suffix`: the session's entry, to add), and so do its satellite keys
-- `follow` (a list, see moving_keys; nil: none). Every write of a session sets its expiry
-- here, so a rule that must follow every session's expiry belongs in this function.
local function expire_session(key, index, exps, suffix, follow)
  expire_at(key, exps)
  index_keep(index, exps, suffix)
  for i = 1, follow and #follow or 0 do
    expire_at(follow[i], exps)
  end
end

-- The optional KEYS of a script that moves a session's expiry, from KEYS[first] on: the
-- session's context hash and history list (both or neither), then the expiry index bucket
-- of its slot (only with expiry rules), then its sync meta and conflicts (only when the store
-- syncs shared fields): 0, 2, 3, 4 or 5 keys, told apart by their count. Returns the
-- satellites that live exactly as long as the session (context pair, sync pair: the list
-- expire_session takes) and the bucket (nil: none).
local function moving_keys(first)
  local n = #KEYS - first + 1
  if n < 2 then
    return {}, nil
  end
  local follow, bucket = {KEYS[first], KEYS[first + 1]}, nil
  if n == 3 or n == 5 then
    bucket = KEYS[first + 2]
  end
  if n >= 4 then
    follow[3], follow[4] = KEYS[#KEYS - 1], KEYS[#KEYS]
  end
  return follow, bucket
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
-- `exps` (`suffix`: also add the session to its user index), then ends as session_written.
-- `first`: where the script's optional KEYS start (moving_keys; nil: it has none); its
-- satellites take the same expiry. Returns the expiry index bucket among them (nil: none).
local function session_update(key, index, bucket, log, fields, exps, now, suffix, first)
  local follow, expiry = nil, nil
  if first then
    follow, expiry = moving_keys(first)
  end
  redis.call('HSET', key, unpack(fields))
  expire_session(key, index, exps, suffix, follow)
  session_written(key, bucket, log, now)
  return expiry
end

-- How many data + metadata fields session `key` holds, as Limits.max_fields counts them:
-- one-character names are the session's own fields and do not count ("o" held op ids before
-- the op log: sessions written by older versions may have it).
local function session_field_count(key)
  local total = redis.call('HLEN', key)
  local core = redis.call('HMGET', key, 'v', 's', 'c', 'u', 'a', 'e', 'm', 'p', 't', 'o',
                          'x', 'y', 'w', 'b')
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
