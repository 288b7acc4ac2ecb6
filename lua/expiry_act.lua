-- expiry_act.lua: apply the stages of a session's expiry rule whose time has come, once.
--
-- KEYS[1]  session hash
-- KEYS[2]  user index (hash: session suffix -> 1)
-- KEYS[3]  expiry index bucket of the session's slot
-- KEYS[4]  the session's event stream
-- KEYS[5]  statistics hash of the session's shard (per-action counters "x:<action>")
-- KEYS[6]  archive hash for this session (ns:ar:...#<created ms>)
-- KEYS[7]  archive event stream (ns:are:...#<created ms>)
-- KEYS[8]  the user's archive index (hash: member -> archived at ms)
-- KEYS[9]  change bucket of this slot (see docs/persistence.md)
-- KEYS[10] the session's turn lease (docs/context.md): while a worker holds the turn, a sweep
--          ("due", "now") leaves the session alone and comes back after ARGV[10] ms
-- ARGV[1]  mode: "due" (stages whose time has come, deadline re-checked here), "access"
--          (every remaining stage, if the deadline has passed: a write arrived after it),
--          "now" (every remaining stage: Python decided the rule fired)
-- ARGV[2]  the rule name the caller resolved the plan for (field y must still name it)
-- ARGV[3]  plan: "offset:action,..." stage times in ms relative to the deadline, in order
--          (actions: warn, notify, suspend, merge, archive, delete)
-- ARGV[4]  archive retention in ms
-- ARGV[5]  session suffix (field of the user index)
-- ARGV[6]  archive member (<suffix>#<created ms>)
-- ARGV[7]  the session's created ms the archive keys were built for
-- ARGV[8]  session id (in pub/sub messages)
-- ARGV[9]  pub/sub channel for warn and notify ("" for none)
-- ARGV[10] ms to wait before looking again at a session whose turn is in progress
--
-- Returns {n, due, action...}: the n actions applied (n >= 1), in order;
--         {0, next}  nothing due yet (the index entry now waits for `next`, ms),
--         {-1}       no such session, no rule, or a different rule or session than the
--                    caller's (the index entry is dropped or left to the current rule).
-- Each action applied writes one "expired" event (fields action, rule) and increments its
-- counter; archive and delete end the session in this same call, so no action runs twice
-- and a session touched since (its deadline moved) is left alone.

local key = KEYS[1]
local cur = redis.call('HMGET', key, 'x', 'y', 'a', 'm', 'w', 'c', 's')
if not cur[2] or cur[6] ~= ARGV[7] then
  if not cur[6] then
    redis.call('ZREM', KEYS[3], key)
  end
  return {-1}
end
if not string.find(cur[2], '|' .. ARGV[2] .. '|', 1, true) then
  return {-1}
end
local now = now_ms()
local due = expiry_due(cur[1], cur[2], tonumber(cur[3]), tonumber(cur[4]))
if ARGV[1] == 'now' then
  due = due or now
end
local all = ARGV[1] ~= 'due'
if ARGV[1] ~= 'access' and redis.call('EXISTS', KEYS[10]) == 1 then
  -- Never mid-turn: the worker holding the turn may be about to write; look again later.
  local later = now + tonumber(ARGV[10])
  redis.call('ZADD', KEYS[3], int(later), key)
  return {0, later}
end
if ARGV[1] == 'access' and due and due > now then
  return {0, due}
end
if not due then
  redis.call('ZREM', KEYS[3], key)
  return {0, -1}
end

local stages = {}
for offset, action in string.gmatch(ARGV[3], '(%-?%d+):(%a+)') do
  stages[#stages + 1] = {tonumber(offset), action}
end
-- Field w "<due>:<k>": stages 1..k of the deadline `due` are done. A new deadline (the session
-- was active since) starts over.
local k = 0
local wdue, wk = string.match(cur[5] or '', '^(%d+):(%d+)$')
if tonumber(wdue) == due then
  k = tonumber(wk)
end

local done = {}
local ended = false
local stream = KEYS[4]
while k < #stages do
  local stage = stages[k + 1]
  if not all and now < due + stage[1] then
    break
  end
  local action = stage[2]
  k = k + 1
  done[#done + 1] = action
  redis.call('HINCRBY', KEYS[5], 'x:' .. action, 1)
  if redis.call('EXISTS', stream) == 1 or action == 'archive' then
    redis.call('XADD', stream, '*', 't', 'expired', 's', cur[7], 'action', action,
               'rule', ARGV[2])
  end
  if ARGV[9] ~= '' and (action == 'warn' or action == 'notify') then
    redis.call('PUBLISH', ARGV[9], action .. ' ' .. ARGV[2] .. ' ' .. int(due) .. ' ' .. ARGV[8])
  end
  if action == 'archive' or action == 'delete' then
    ended = true
    break
  end
end

if #done == 0 then
  local nxt = due + stages[k + 1][1]
  redis.call('ZADD', KEYS[3], int(nxt), key)
  return {0, nxt}
end
if ended then
  local action = done[#done]
  redis.call('HDEL', KEYS[2], ARGV[5])
  count_session(KEYS[5], ARGV[5], cur[7], -1)
  redis.call('HINCRBY', KEYS[5], 'deleted', 1)
  redis.call('ZREM', KEYS[3], key)
  if action == 'archive' then
    local retention = ARGV[4]
    redis.call('RENAME', key, KEYS[6])
    redis.call('HSET', KEYS[6], 'X', int(now), 'Y', ARGV[2])
    redis.call('PEXPIRE', KEYS[6], retention)
    redis.call('RENAME', stream, KEYS[7])
    redis.call('PEXPIRE', KEYS[7], retention)
    local fresh = redis.call('EXISTS', KEYS[8]) == 0
    redis.call('HSET', KEYS[8], ARGV[6], int(now))
    if fresh then
      redis.call('PEXPIRE', KEYS[8], retention)
    else
      redis.call('PEXPIRE', KEYS[8], retention, 'GT')
    end
  else
    redis.call('DEL', key)
  end
  mark_changed(KEYS[9], key)
elseif k >= #stages then
  -- The last stage left the session in place (suspend, notify, merge): the rule is spent.
  redis.call('HDEL', key, 'x', 'y', 'w')
  redis.call('ZREM', KEYS[3], key)
else
  redis.call('HSET', key, 'w', int(due) .. ':' .. int(k))
  redis.call('ZADD', KEYS[3], int(due + stages[k + 1][1]), key)
end
local out = {#done, due}
for i = 1, #done do
  out[#out + 1] = done[i]
end
return out
