-- sync_done.lua: end a journaled sync: drop its plan and record its history, once.
--
-- KEYS[1]  sync journal (sync_plan.lua)
-- KEYS[2]  sync history (list of JSON records, newest first)
-- ARGV[1]  plan id
-- ARGV[2]  history cap (entries kept)
-- ARGV[3..]  the sync's history records (JSON)
--
-- Only the call that removes the plan records history: a retry, or a second recoverer that
-- replayed the same plan (every apply is idempotent), records nothing twice.
-- Returns 1 if this call ended the plan, 0 if another had.

if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if #ARGV > 2 then
  redis.call('LPUSH', KEYS[2], unpack(ARGV, 3))
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
end
return 1
