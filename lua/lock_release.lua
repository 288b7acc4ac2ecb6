-- lock_release.lua: release a lock only if the caller still owns it.
--
-- KEYS[1]  lock key (string holding the owner's token)
-- ARGV[1]  the caller's token
--
-- Returns 1 released, 0 not the owner any more (it expired and maybe someone else holds it).
-- Running it twice is harmless: the second run finds another token or no key.

return release_owned(KEYS[1], ARGV[1])
