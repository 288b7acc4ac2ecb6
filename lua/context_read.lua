-- context_read.lua: a session's context hash and the newest items of its history, in one step.
--
-- KEYS[1]  session hash (its 'c' field is the context's generation)
-- KEYS[2]  context hash
-- KEYS[3]  history list
-- ARGV[1]  "vars" (the hash only), "history" (the list only) or "all"
-- ARGV[2]  how many of the newest history items ("0" = all of them)
--
-- Returns {hash as a flat list, history items oldest first}; both empty when the session
-- does not exist or the context belongs to an earlier session of the same identity.
-- Read-only.

local gen = context_gen(KEYS[1])
if not gen or redis.call('HGET', KEYS[2], '#g') ~= gen then
  return {{}, {}}
end
local hash, items = {}, {}
if ARGV[1] ~= 'history' then
  hash = redis.call('HGETALL', KEYS[2])
end
if ARGV[1] ~= 'vars' then
  local n = tonumber(ARGV[2])
  items = redis.call('LRANGE', KEYS[3], n > 0 and -n or 0, -1)
end
return {hash, items}
