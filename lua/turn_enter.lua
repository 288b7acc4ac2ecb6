-- turn_enter.lua: take a conversation's turn if it is free and the caller is first in line.
--
-- KEYS[1]  turn lease (string holding the holder's token, with the lease as its TTL)
-- KEYS[2]  waiter queue (zset: token -> arrival number)
-- KEYS[3]  waiter liveness (hash: token -> deadline in ms; '#' the arrival counter)
-- ARGV[1]  the caller's token
-- ARGV[2]  lease in ms
-- ARGV[3]  ms a waiter stays in line without calling again (it calls while it waits)
--
-- Returns 1 when the caller holds the turn (also when it already did: a retry is harmless),
-- 0 when it waits (it is queued, or its place is kept and its liveness renewed).
-- Waiters whose liveness lapsed (their process died) are dropped from the head of the line,
-- at most 100 per call.

local token = ARGV[1]
local holder = redis.call('GET', KEYS[1])
if holder == token then
  return 1
end
local now = now_ms()
local alive = int(now + tonumber(ARGV[3]))

local head
for _ = 1, 100 do
  head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not head or head == token then
    break
  end
  local deadline = tonumber(redis.call('HGET', KEYS[3], head) or '0')
  if deadline > now then
    break
  end
  redis.call('ZREM', KEYS[2], head)
  redis.call('HDEL', KEYS[3], head)
  head = nil
end

if not holder and (not head or head == token) then
  redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
  if head then
    redis.call('ZREM', KEYS[2], token)
    redis.call('HDEL', KEYS[3], token)
  end
  return 1
end

if not redis.call('ZSCORE', KEYS[2], token) then
  redis.call('ZADD', KEYS[2], redis.call('HINCRBY', KEYS[3], '#', 1), token)
end
redis.call('HSET', KEYS[3], token, alive)
local keep = math.max(tonumber(ARGV[2]), tonumber(ARGV[3])) * 2
redis.call('PEXPIRE', KEYS[2], keep)
redis.call('PEXPIRE', KEYS[3], keep)
return 0
