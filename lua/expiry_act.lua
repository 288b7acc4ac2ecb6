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
-- KEYS[11] the effect outbox of this slot (zset: effect -> when it may be claimed, ms): what
--          must happen outside Redis (the notify callback, the archive file) is recorded here
--          in the same call, and delivered from here (claim, effect, ack: expiry_outbox.lua)
-- KEYS[12] the notice queues of this slot's outbox (lib/outbox.lua): a notice written while
--          an earlier one of the session is still in the outbox waits behind it
-- KEYS[13] the merge target: the same user's newer session on the same chat (only when
--          ARGV[14] names one; same user, so the same slot)
-- ARGV[10] ms to wait before looking again at a session whose turn is in progress
-- ARGV[11] suspend: transition.lua's ARGV[7] for the target "suspended" on this platform
--          (lib/transit.lua), "" when the plan has no suspend stage
-- ARGV[12] effects to record in the outbox: "n" the notify callback (warn, notify), "f" the
--          archive file; "" none
-- ARGV[13] ms the outbox entries written here stay claimed by the caller, which delivers those
--          returned at once; after that, any sweep may claim them
-- ARGV[14] the merge target's created ms, "" for none (a merge stage then merges nothing and
--          the session stays, its rule spent)
-- ARGV[15] reason of the suspend transition (encoded)
-- ARGV[16] max number of data + metadata fields a session may hold (Limits.max_fields, as in
--          update.lua): a merge that would take the target past it copies nothing and is
--          treated as a merge with no target (the session stays; later stages still apply)
-- ARGV[17] the next fixed deadlines of the rule, ms, space-separated ("" for none): a daily
--          rule's next boundaries; when the last stage leaves the session in place, the first
--          still ahead becomes its deadline x (lib/period.lua, period_spent)
--
-- Returns {n, due, {action...}, {effect...}}: the n actions applied (n >= 1), in order, and
--                    the outbox entries written that the caller delivers now (claimed by it
--                    for ARGV[13] ms): every archive file, and a notice only when no earlier
--                    notice of the session is still in the outbox (the others wait in their
--                    queue: the ack of the one before hands each on, expiry_outbox.lua);
--         {0, next}  nothing due yet (the index entry now waits for `next`, ms; -1: none),
--                    or the deadline is spent (field w "<due>:*": its stages all ran and
--                    left the session in place; the index entry goes),
--                    or only suspend stages the state table forbids passed (applied to
--                    nothing: no counter, no event; the rule moves on as after any stage),
--         {-1}       no such session, no rule, or a different rule or session than the
--                    caller's (the index entry is dropped or left to the current rule),
--         {-2}       the merge target named is gone or newer than the caller saw: nothing
--                    written; the caller looks for the target again.
-- Each action applied writes one "expired" event (fields action, rule) and increments its
-- counter, and its whole Redis side happens in this same call: archive and delete end the
-- session, merge moves its data into the target and ends it, suspend moves it through the
-- state machine, warn and notify publish. So no action runs twice, none is half done, and a
-- session touched since (its deadline moved) is left alone.

local key = KEYS[1]
-- The session's index entry now waits for `at` (ms): its next stage, or another look later.
local function wait_until(at)
  redis.call('ZADD', KEYS[3], int(at), key)
  return {0, at}
end
local cur = redis.call('HMGET', key, 'x', 'y', 'a', 'm', 'w', 'c', 's', 'v')
if not cur[2] or cur[6] ~= ARGV[7] then
  if not cur[6] then
    redis.call('ZREM', KEYS[3], key)
  end
  return {-1}
end
if not string.find(cur[2], '|' .. ARGV[2] .. '|', 1, true) then
  return {-1}
end
local target = KEYS[13]
if ARGV[14] ~= '' and redis.call('HGET', target, 'c') ~= ARGV[14] then
  return {-2}
end
local now = now_ms()
local due = expiry_due(cur[1], cur[2], tonumber(cur[3]), tonumber(cur[4]))
if ARGV[1] == 'now' then
  due = due or now
end
if not due or expiry_spent(cur[5], due) then
  -- No deadline, or every stage of this one ran and left the session in place: nothing to
  -- do before the rule has a new deadline (lib/period.lua, period_spent).
  redis.call('ZREM', KEYS[3], key)
  return {0, -1}
end
local all = ARGV[1] ~= 'due'
if ARGV[1] ~= 'access' and redis.call('EXISTS', KEYS[10]) == 1 then
  -- Never mid-turn: the worker holding the turn may be about to write; look again later.
  return wait_until(now + tonumber(ARGV[10]))
end
if ARGV[1] == 'access' and due > now then
  return {0, due}
end

local stages = {}
for offset, action in string.gmatch(ARGV[3], '(%-?%d+):(%a+)') do
  stages[#stages + 1] = {tonumber(offset), action}
end
-- Field w "<due>:<k>": stages 1..k of the deadline `due` are done ("<due>:*", all of them:
-- returned above). A new deadline (the session was active since) starts over.
local k = 0
local wdue, wk = string.match(cur[5] or '', '^(%d+):(%d+)$')
if tonumber(wdue) == due and tonumber(wk) < #stages then
  k = tonumber(wk)
end

local k0 = k
local done = {}
local effects = {}
local ended = false
local stream = KEYS[4]
local claim = int(now + tonumber(ARGV[13]))
while k < #stages do
  local stage = stages[k + 1]
  if not all and now < due + stage[1] then
    break
  end
  local action = stage[2]
  k = k + 1
  local effect = nil
  if action == 'suspend' and ARGV[11] ~= '' and not state_allows(ARGV[11], cur[7]) then
    -- The state table forbids the move: the stage passes, applied to nothing (no counter, no
    -- event), and the rule goes on to its next stage.
    action = nil
  else
    done[#done + 1] = action
    redis.call('HINCRBY', KEYS[5], 'x:' .. action, 1)
    if redis.call('EXISTS', stream) == 1 or action == 'archive' then
      redis.call('XADD', stream, '*', 't', 'expired', 's', cur[7], 'action', action,
                 'rule', ARGV[2])
    end
  end
  if action == 'warn' or action == 'notify' then
    if ARGV[9] ~= '' then
      redis.call('PUBLISH', ARGV[9],
                 action .. ' ' .. ARGV[2] .. ' ' .. int(due) .. ' ' .. ARGV[8])
    end
    if string.find(ARGV[12], 'n', 1, true) then
      -- "<deadline>:<stage>": two stages with the same action are two notices.
      effect = table.concat({'n', action, ARGV[2], int(due) .. ':' .. k, ARGV[7], ARGV[8]}, '|')
    end
  elseif action == 'suspend' and ARGV[11] ~= '' then
    state_move(key, stream, KEYS[5], {cur[8], cur[7], cur[6], cur[4]}, 'suspended', ARGV[11],
               ARGV[15], now)
    cur[7] = 'suspended'
    cur[8] = redis.call('HGET', key, 'v')
  elseif action == 'merge' and ARGV[14] ~= '' then
    -- The target's values win; data fields only the old session has are added. One-character
    -- names are the session's own fields, "@" names its metadata: neither is data. All or
    -- nothing: the target never holds more fields than a write could give it.
    local flat = redis.call('HGETALL', key)
    local adds = {}
    for i = 1, #flat, 2 do
      local name = flat[i]
      if #name > 1 and string.sub(name, 1, 1) ~= '@'
          and redis.call('HEXISTS', target, name) == 0 then
        adds[#adds + 1] = name
        adds[#adds + 1] = flat[i + 1]
      end
    end
    if session_field_count(target) + #adds / 2 <= tonumber(ARGV[16]) then
      if #adds > 0 then
        redis.call('HSET', target, unpack(adds))
        redis.call('HINCRBY', target, 'v', 1)
        redis.call('HSET', target, 'u', int(now))
        mark_changed(KEYS[9], target)
      end
      ended = true
      break
    end
  elseif action == 'archive' and string.find(ARGV[12], 'f', 1, true) then
    effect = table.concat({'f', ARGV[7], ARGV[8]}, '|')
  end
  if effect and notice_queued(KEYS[11], KEYS[12], effect, claim) then
    effects[#effects + 1] = effect
  end
  if action == 'archive' or action == 'delete' then
    ended = true
    break
  end
end

if k == k0 then
  return wait_until(due + stages[k + 1][1])
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
elseif k >= #stages then
  -- The last stage left the session in place (suspend, notify, a merge with no target): the
  -- rule is spent for this deadline; it fires again at its next one.
  period_spent(KEYS[3], key, cur[1], cur[2], cur[3], cur[4], now, ARGV[17])
else
  redis.call('HSET', key, 'w', int(due) .. ':' .. int(k))
  wait_until(due + stages[k + 1][1])
end
-- Every branch above wrote the session (ended it, suspended it, spent or advanced its rule):
-- incremental backups must see it, as they see any other write.
mark_changed(KEYS[9], key)
if #done == 0 then
  return {0, -1}  -- only stages applied to nothing passed: nothing to report
end
return {#done, due, done, effects}
