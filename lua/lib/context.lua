-- lib/context.lua: a session's context keys (hash and history list) kept in step with it.
--
-- The context belongs to one incarnation of the session: its '#g' field holds the session's
-- creation time ('c'), and a context whose '#g' differs was left by an earlier session of the
-- same identity (deleted by the store alone, or expired) and is dropped before any write.
-- History items are "<n>|<tokens>|<ms>|<payload>" (see sessioncache/history.py).

-- The generation of a context written now: the session's 'c', or nil if it does not exist.
local function context_gen(session)
  return redis.call('HGET', session, 'c')
end

-- Make `ctx` belong to generation `gen`; returns true if an older context was dropped.
-- `held`: its '#g' if the caller already read it (false: none), nil to read it here.
local function context_claim(ctx, hist, gen, version, held)
  if held == nil then
    held = redis.call('HGET', ctx, '#g')
  end
  if held == gen then
    return false
  end
  redis.call('DEL', ctx, hist)
  redis.call('HSET', ctx, '#g', gen, '#v', version, '#n', '0', '#b', '0', '#t', '0')
  return true
end

-- The token count of a history item (0 when unknown).
local function item_tokens(item)
  return tonumber(string.match(item, '^%d+|(%d*)|')) or 0
end
