-- link_remove.lua: take an identity out of its person (the others stay linked).
--
-- KEYS[1]  owner map (hash: "platform:user" -> person)
-- KEYS[2]  members map (hash: person -> identities joined by " ")
-- ARGV[1]  identity "platform:user"
--
-- Returns {1, person}  removed,  {0}  the identity was not linked.
-- A person left with one identity is dissolved: one identity links nothing.

local person = redis.call('HGET', KEYS[1], ARGV[1])
if not person then
  return {0}
end
local rest = {}
for who in string.gmatch(redis.call('HGET', KEYS[2], person) or '', '%S+') do
  if who ~= ARGV[1] then
    rest[#rest + 1] = who
  end
end
redis.call('HDEL', KEYS[1], ARGV[1])
if #rest < 2 then
  for i = 1, #rest do
    redis.call('HDEL', KEYS[1], rest[i])
  end
  redis.call('HDEL', KEYS[2], person)
else
  redis.call('HSET', KEYS[2], person, table.concat(rest, ' '))
end
return {1, person}
