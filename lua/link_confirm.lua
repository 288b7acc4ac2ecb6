-- link_confirm.lua: redeem a link code from another identity; links both to one person.
--
-- KEYS[1]  pending code record (link_start.lua), named by the code's public part
-- KEYS[2]  failure counter of the confirming identity (string, expires with the window)
-- KEYS[3]  owner map (hash: "platform:user" -> person)
-- KEYS[4]  members map (hash: person -> identities joined by " ")
-- ARGV[1]  confirming identity "platform:user"
-- ARGV[2]  secret part as typed
-- ARGV[3]  wrong guesses a code survives (then it is burned)
-- ARGV[4]  wrong guesses the confirming identity may make per window
-- ARGV[5]  rate window in ms
-- ARGV[6]  random suffix (drawn by the caller, repeated by a retry) for a fresh person id
--
-- Returns {1, person, starter}  linked (the code is used up),
--         {-1}  no such code (wrong, expired or already used),
--         {-2}  wrong secret (the code's try count went up; burned at ARGV[3]),
--         {-3, ttl_ms}  this identity guessed wrong too often in this window,
--         {-4, person}  the confirming identity belongs to another person,
--         {-5}  the code was started by this same identity,
--         {-6}  the fresh person id drawn is taken (nothing changed; draw another suffix).
--
-- A person's id is the name of the identity that started its first link. If that identity
-- later unlinks, the person lives on under that id with its other identities, so when the
-- starter is in no person and a person with its name still exists, the new person gets a
-- fresh id, "<starter>#<ARGV[6]>" ('#' is percent-encoded in identity names, so no identity
-- can ever start a person with this id): the unlinked identity never rejoins the old person.
-- A used code stays (marked with its joiner and person) until it expires, so a client retry
-- of the same call gets the same answer and changes nothing.

local fails = tonumber(redis.call('GET', KEYS[2]) or '0')
if fails >= tonumber(ARGV[4]) then
  return {-3, redis.call('PTTL', KEYS[2])}
end
local function failed()
  if redis.call('INCR', KEYS[2]) == 1 then
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
  end
end
local rec = redis.call('HMGET', KEYS[1], 'who', 'secret', 'joiner', 'person')
if rec[3] == ARGV[1] and rec[2] == ARGV[2] then
  return {1, rec[4], rec[1]}  -- a retry of the call that used this code: its answer again
end
if not rec[1] or rec[3] then
  failed()
  return {-1}
end
if rec[2] ~= ARGV[2] then
  failed()
  if redis.call('HINCRBY', KEYS[1], 'tries', 1) >= tonumber(ARGV[3]) then
    redis.call('DEL', KEYS[1])
  end
  return {-2}
end
local starter, joiner = rec[1], ARGV[1]
if starter == joiner then
  return {-5}
end
local person = redis.call('HGET', KEYS[3], starter)
if not person then
  person = starter
  if redis.call('HEXISTS', KEYS[4], person) == 1 then
    person = starter .. '#' .. ARGV[6]
    if redis.call('HEXISTS', KEYS[4], person) == 1 then
      return {-6}
    end
  end
end
local owner = redis.call('HGET', KEYS[3], joiner)
if owner and owner ~= person then
  return {-4, owner}
end
redis.call('HSET', KEYS[1], 'joiner', joiner, 'person', person)
if owner == person then
  return {1, person, starter}
end
local members = redis.call('HGET', KEYS[4], person) or starter
redis.call('HSET', KEYS[3], starter, person, joiner, person)
redis.call('HSET', KEYS[4], person, members .. ' ' .. joiner)
return {1, person, starter}
