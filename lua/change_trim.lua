-- change_trim.lua: drop the change-index entries a durable backup has consumed.
--
-- KEYS[1]  change bucket (zset: session key -> change sequence, plus the '#' counter)
-- ARGV[1]  highest sequence the backup read from this bucket (integer)
--
-- Returns the number of entries removed. The '#' counter is kept, so the bucket stays armed;
-- entries with a higher sequence (changes after the backup read the bucket) are kept.

local top = redis.call('ZSCORE', KEYS[1], '#')
if not top then
  return 0
end
local removed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if tonumber(top) <= tonumber(ARGV[1]) then
  removed = removed - 1
  redis.call('ZADD', KEYS[1], top, '#')
end
return removed
