-- publish_table.lua: store a new version of the fleet's transition table (compare and set).
--
-- KEYS[1]  the transition table key (string: JSON with a "version" member)
-- ARGV[1]  the version the caller last read ("0" if none was stored)
-- ARGV[2]  the new table as JSON, already carrying version ARGV[1] + 1
--
-- Returns {1, new_version} stored, {0, stored_version} someone published first.
-- The stored version is read with a pattern on the JSON written by TransitionTable.to_json()
-- (no cjson: it is not available everywhere this must run).

local stored = redis.call('GET', KEYS[1])
local version = 0
if stored then
  version = tonumber(string.match(stored, '"version": (%d+)')) or 0
end
if version ~= tonumber(ARGV[1]) then
  return {0, version}
end
redis.call('SET', KEYS[1], ARGV[2])
return {1, version + 1}
