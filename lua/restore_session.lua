-- restore_session.lua: write one session from a backup, deciding replace/merge/skip atomically.
--
-- KEYS[1]  session hash
-- KEYS[2]  user index (hash: session suffix -> 1)
-- KEYS[3]  change bucket of this slot (the restore is itself a change an incremental must see)
-- KEYS[4]  expiry index bucket of this slot: a session restored with an expiry rule (fields
--          x, y) gets its index entry back, so the sweep sees it again (docs/expiry.md)
-- ARGV[1]  mode: "replace" (always write), "merge" (write only if the incoming version is
--          newer than the stored one, or nothing is stored), "skip" (write only if absent)
-- ARGV[2]  absolute expiry in ms since the epoch, "0" for none
-- ARGV[3]  session suffix (field of the user index)
-- ARGV[4]  incoming version (integer)
-- ARGV[5..] field, value, field, value, ... (the whole session hash, as backed up; the client
--          checked there are at most 3000 fields: one unpack() stays under Lua's 8000 limit)
--
-- Returns 1 written, 0 the stored session was kept, -1 the incoming session has already
-- expired (nothing written). Running it twice writes the same hash twice: harmless.

local key = KEYS[1]
local mode = ARGV[1]
local exp = tonumber(ARGV[2])
if has_passed(exp) then return -1 end
if mode ~= 'replace' then
  local cur = redis.call('HGET', key, 'v')
  if cur then
    if mode == 'skip' or tonumber(cur) >= tonumber(ARGV[4]) then
      return 0
    end
  end
end

redis.call('DEL', key)
redis.call('HSET', key, unpack(ARGV, 5))
-- "0" is no expiry: the session, and so its index, never expire.
expire_session(key, KEYS[2], exp > 0 and ARGV[2] or nil, ARGV[3])
local rule = redis.call('HMGET', key, 'x', 'y', 'a', 'm', 'w')
expiry_index(KEYS[4], key, rule[1], rule[2], rule[3], rule[4], rule[5])
mark_changed(KEYS[3], key)
return 1
