-- fleet_finish.lua: record the end of a fleet job's run and release its lease.
--
-- KEYS[1]  job state (hash, see fleet_claim.lua)
-- KEYS[2]  the job's lease
-- ARGV[1]  the run's token
-- ARGV[2]  the interval number the run claimed
-- ARGV[3]  status: "ok" or "error:<exception type>"
--
-- Returns 1 recorded, 2 already recorded (a client retry), 0 the run had lost its claim (it
-- stalled past its lease and another process took the interval over): nothing is written.

local cur = redis.call('HMGET', KEYS[1], 'token', 'completed')
if cur[1] ~= ARGV[1] then
  return 0
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
if cur[2] == ARGV[2] then
  return 2
end
local now = now_ms()
redis.call('HSET', KEYS[1], 'completed', ARGV[2], 'finished', int(now),
           'status', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'runs', 1)
return 1
