-- fleet_claim.lua: claim the current interval of a fleet job, and its lease, for one run.
--
-- KEYS[1]  job state (hash: claimed, completed, holder, started, finished, status, runs, ...)
-- KEYS[2]  the job's lease (string holding the holder's token; shared with manual runs)
-- ARGV[1]  interval in ms (integer >= 1); interval n covers server time [n*I, (n+1)*I)
-- ARGV[2]  the caller's token (becomes the lease value)
-- ARGV[3]  lease time to live in ms
-- ARGV[4]  holder label (host:pid, for health)
--
-- Returns {1, n, missed}  claimed interval n; missed is a claimed interval whose holder died
--                         before finishing it (the lease lapsed), or -1; this run covers it,
--         {0, n, -1}      a run holds the lease (no overlap), or interval n is already claimed.
-- Interval numbers come from the server's clock, so every process agrees on them. A retry by
-- the same caller finds its own lease and returns 0 without running twice.

local now = now_ms()
local n = math.floor(now / tonumber(ARGV[1]))
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {0, n, -1}
end
local cur = redis.call('HMGET', KEYS[1], 'claimed', 'completed')
local claimed = tonumber(cur[1] or '-1')
local completed = tonumber(cur[2] or '-1')
-- ~= rather than <: after a failover to a server whose clock is behind, the job resumes at
-- the new numbers instead of waiting for the old ones to come round again.
if claimed == n and completed == n then
  return {0, n, -1}
end
local missed = -1
if claimed ~= completed and claimed >= 0 then
  missed = claimed
  redis.call('HINCRBY', KEYS[1], 'takeovers', 1)
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('HSET', KEYS[1], 'claimed', int(n), 'holder', ARGV[4],
           'token', ARGV[2], 'started', int(now), 'interval', ARGV[1])
return {1, n, missed}
