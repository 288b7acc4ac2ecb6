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

-- A session's satellite keys `a` and `b` (its context pair, its sync meta and conflicts) expire
-- at `exps` like the session itself; a missing satellite is left missing.
local function expire_pair_at(a, b, exps)
  expire_at(a, exps)
  expire_at(b, exps)
end

-- `a` and `b` take the current expiry of `key` (none if it has none), so they live exactly as
-- long as it; nothing moves if `key` does not exist.
local function follow_expiry(key, a, b)
  local exp = redis.call('PEXPIRETIME', key)
  if exp ~= -2 then
    expire_pair_at(a, b, exp > 0 and int(exp) or nil)
  end
end
