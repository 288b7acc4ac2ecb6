-- lib/record.lua: integration records (aiogram FSM, python-telegram-bot persistence).

-- A record's expiry as its caller asks (integration records: aiogram, python-telegram-bot): `ttl`
-- in ms, "0" for none (PERSIST), "" to keep the key's current expiry.
local function record_ttl(key, ttl)
  if ttl == '0' then
    redis.call('PERSIST', key)
  elseif ttl ~= '' then
    redis.call('PEXPIRE', key, ttl)
  end
end
