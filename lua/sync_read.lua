-- sync_read.lua: a session's shared fields with their stamps, read in one atomic step.
--
-- KEYS[1]  session hash
-- KEYS[2]  sync meta of the session (sync_apply.lua)
-- ARGV[1..n]  stored field names
--
-- Returns {} if there is no session, else for each field {value|false, stamp|false,
-- merge state|false, base stamp|false}.

if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local out = {}
for i = 1, #ARGV do
  local f = ARGV[i]
  local m = redis.call('HMGET', KEYS[2], 'h:' .. f, 'j:' .. f, 'b:' .. f)
  out[i] = {redis.call('HGET', KEYS[1], f) or false, m[1] or false, m[2] or false,
            m[3] or false}
end
return out
