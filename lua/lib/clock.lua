-- lib/clock.lua: the server clock in ms and integer formatting (helpers for every script).
--
-- Every time a script stores is the server's (TIME), never the client's: the fleet's clocks
-- may disagree, the server's is one clock for every writer of a key.

-- Milliseconds since the epoch, from the server clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whether an absolute expiry `exp` (ms since the epoch; 0 = none) has passed: a restore does
-- not write a key that would already be gone.
local function has_passed(exp)
  return exp > 0 and exp <= now_ms()
end

-- An integer as a decimal string (tostring would give "1.7e+12" for large numbers).
local function int(n)
  return string.format('%d', n)
end

-- `key` now expires at `exps` (ms since the epoch, as a string), or never if `exps` is nil.
local function expire_at(key, exps)
  if exps then
    redis.call('PEXPIREAT', key, exps)
  else
    redis.call('PERSIST', key)
  end
end
