-- link_start.lua: issue a one-time link code for an identity, rate-limited per identity.
--
-- All identity-map keys share one hash tag ({idm}), so a link is decided in one slot.
-- KEYS[1]  pending code record (hash: who, secret, tries), named by the code's public part
-- KEYS[2]  start counter of this identity (string, expires with the rate window)
-- KEYS[3]  owner map (hash: "platform:user" -> person)
-- ARGV[1]  identity "platform:user" starting the link
-- ARGV[2]  secret part of the code
-- ARGV[3]  code lifetime in ms
-- ARGV[4]  most codes this identity may start per window
-- ARGV[5]  rate window in ms
--
-- Returns {1}  issued,  {-1, ttl_ms}  too many codes started in this window,
--         {-2}  the public part is taken (the caller draws another).

local n = redis.call('INCR', KEYS[2])
if n == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
if n > tonumber(ARGV[4]) then
  return {-1, redis.call('PTTL', KEYS[2])}
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {-2}
end
redis.call('HSET', KEYS[1], 'who', ARGV[1], 'secret', ARGV[2], 'tries', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1}
