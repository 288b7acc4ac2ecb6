-- sync_plan.lua: journal a sync of a linked identity's shared fields; its person and members.
--
-- One step in the identity map's slot ({idm}): the link lookup and the journal entry that lets
-- recover() finish a sync a killed process left between the slots of its targets.
-- KEYS[1]  owner map (hash: "platform:user" -> person)
-- KEYS[2]  members map (hash: person -> identities joined by " ")
-- KEYS[3]  sync journal (hash: plan id -> JSON plan)
-- ARGV[1]  the source's identity "platform:user"
-- ARGV[2]  plan id (an HLC stamp: unique per process, ordered)
-- ARGV[3]  the plan (JSON: op, source, fields)
--
-- Returns {}  the identity is not linked (nothing journaled: there is nobody to sync to),
--         {person, members}  journaled.

local person = redis.call('HGET', KEYS[1], ARGV[1])
if not person then
  return {}
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return {person, redis.call('HGET', KEYS[2], person) or ''}
