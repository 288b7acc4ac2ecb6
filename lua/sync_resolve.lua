-- sync_resolve.lua: settle a conflict kept for review: the choice written and the record removed.
--
-- One step in the session's slot (its conflicts hash sits there): the chosen value is written
-- as the session's own stamped write (mode "local", lib/sync.lua) and the conflict's record is
-- deleted together, so two resolvers of one conflict cannot both write, and a crash cannot
-- leave the choice written with the conflict still listed. Only the call that removed the
-- record goes on to sync the choice to the linked sessions (SyncManager.resolve_conflict).
-- Safe to run twice: the op log answers a retry ({2}).
-- KEYS[1]  session hash
-- KEYS[2]  change bucket of this slot (docs/persistence.md)
-- KEYS[3]  op log of the session (lib/ops.lua)
-- KEYS[4]  sync meta of the session (lib/sync.lua)
-- KEYS[5]  conflicts of the session (lib/sync.lua)
-- ARGV[1..3]  op id, call digest, retry horizon in ms (lib/ops.lua)
-- ARGV[4]  conflict id
-- ARGV[5]  the choice: "incoming" (the value the conflict kept), "stored" (what the session
--          holds now) or "value" (ARGV[9])
-- ARGV[6]  a fresh stamp (ordered after the stored one if another clock is ahead)
-- ARGV[7]  origin: the session's own id
-- ARGV[8]  origin rank of the session's platform (lib/sync.lua, "priority")
-- ARGV[9]  the value of choice "value" (encoded as codec.py stores it), else ""
--
-- Returns {1, version, field, stamp, kind, value} resolved (kind "v", or "d": the choice is no
-- value, which deletes the field); {2, version} already applied by an earlier attempt of this
-- call; {-1} no such session; {-3} no such conflict (resolved by another call: nothing
-- written).

local key, conflicts, cid = KEYS[1], KEYS[5], ARGV[4]
local version = redis.call('HGET', key, 'v')
if not version then return {-1} end
if op_applied(KEYS[3]) then return {2, tonumber(version)} end
local rec = redis.call('HMGET', conflicts, cid .. ':f', cid .. ':v', cid .. ':k')
local f = rec[1]
if not f then return {-3} end

local kind, value = 'v', ARGV[9]
if ARGV[5] == 'incoming' then
  kind, value = rec[3], rec[2]
elseif ARGV[5] == 'stored' then
  value = redis.call('HGET', key, f)
  if not value then kind, value = 'd', '' end
end
redis.call('HDEL', conflicts, cid .. ':f', cid .. ':v', cid .. ':k', cid .. ':s', cid .. ':o',
           cid .. ':h')
local sets, dels = {}, {}
local verdict, stamped = sync_field(KEYS[4], conflicts, 'local', ARGV[7], ARGV[8], f, ARGV[6],
                                    '', kind, value, cid, sets, dels)
version = sync_write(key, KEYS[4], conflicts, KEYS[2], KEYS[3], version, verdict == 'a', sets,
                     dels)
return {1, version, f, stamped[1], kind, value}
