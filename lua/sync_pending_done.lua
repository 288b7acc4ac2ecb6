-- sync_pending_done.lua: drop a session from the batch job's pending set once it is synced.
--
-- The batch job read the session's score before syncing it; a write during the sync re-adds
-- the session with a newer score, and that entry must stay for the next run. Safe to run
-- twice: a second call finds the entry gone or newer and leaves it.
-- KEYS[1]  pending sorted set (KeySchema.sync_pending)
-- ARGV[1]  session id
-- ARGV[2]  the score the batch job read
--
-- Returns 1 if the entry was removed, 0 if it was gone or written again since.

local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
