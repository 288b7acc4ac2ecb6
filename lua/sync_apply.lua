-- sync_apply.lua: apply shared fields to one session, deciding each against what is stored.
--
-- A sync from a linked session applies its fields by strategy (lib/sync.lua); "local" is the
-- session's own stamped write without other changes (SyncManager.update() writes shared fields
-- through update.lua instead, so a logical write is one script and one version). Safe to run
-- twice: the op log answers a retry, and an equal stamp is already applied.
-- KEYS[1]  session hash
-- KEYS[2]  user index (a sync keeps the session's expiry; read only for the ARGV[8+6n] check)
-- KEYS[3]  change bucket of this slot (docs/persistence.md)
-- KEYS[4]  op log of the session (lib/ops.lua)
-- KEYS[5]  sync meta of the session (lib/sync.lua)
-- KEYS[6]  conflicts of the session (lib/sync.lua)
-- ARGV[1..3]  op id, call digest, retry horizon in ms (lib/ops.lua)
-- ARGV[4]  "local" or the strategy of a sync: "lww", "fww", "priority", "merge", "manual",
--          "cas" (custom: applies only if the stored stamp still equals the field's base)
-- ARGV[5]  origin: the session id the values come from
-- ARGV[6]  origin rank for "priority" (lower wins)
-- ARGV[7]  number of fields n; then n groups of 6 (lib/sync.lua, sync_fields)
-- ARGV[8+6n]  optional: how many entries the caller last saw in the user index, then those
--          entries: the call applies only if the index still holds exactly them (the caller
--          found this target from a remembered index instead of reading it again)
--
-- Returns {1, version, r1, ..., rn} with ri per field: "a" applied, "k" kept the stored one,
-- "c" conflict recorded (the stored value stays), "x" stored stamp moved (cas: read again);
-- {2, version} already applied by an earlier attempt; {-1} no such session; {-2} the user
-- index is not what the caller saw (nothing written: read it and find the targets again).

local key = KEYS[1]
local seen = 8 + 6 * tonumber(ARGV[7])
if ARGV[seen] then
  local same = redis.call('HLEN', KEYS[2]) == tonumber(ARGV[seen])
  for i = seen + 1, #ARGV do
    if not same then break end
    same = redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1
  end
  if not same then return {-2} end
end
local version = redis.call('HGET', key, 'v')
if not version then return {-1} end
if op_applied(KEYS[4]) then return {2, tonumber(version)} end

local sets, dels = {}, {}
local verdicts, changed = sync_fields(KEYS[5], KEYS[6], ARGV[4], ARGV[5], ARGV[6], 8,
                                      tonumber(ARGV[7]), sets, dels)
version = sync_write(key, KEYS[5], KEYS[6], KEYS[3], KEYS[4], version, changed, sets, dels)
local out = {1, version}
for i = 1, #verdicts do out[#out + 1] = verdicts[i] end
return out
