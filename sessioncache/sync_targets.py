"""Which sessions a sync goes to: a person's other sessions, found in their user indexes.

A user index is remembered once read; a sync to a remembered target hands the entries to
sync_apply.lua, which applies only if the index still holds exactly them (checked in the same
atomic step), so a remembered index saves a round trip and is never trusted stale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence

from .identity import parse_session_id
from .identity_links import identity_name, split_identity
from .store import SessionStore

Entries = tuple[str, ...]
Apply = Callable[[str, Entries | None], Awaitable[dict[str, str] | None]]
"""Apply to one target, checking the index entries given (None: no check); None if stale."""


class Targets:
    """A person's other sessions, with the user indexes this process last saw."""

    def __init__(self, store: SessionStore, cap: int = 10_000) -> None:
        self.store = store
        self.cap = cap
        self._seen: dict[str, Entries] = {}

    async def _read(self, users: Sequence[str]) -> list[Entries]:
        keys = self.store.keys
        if len(users) == 1:  # one round trip without gather's task
            raws = [await self.store.client.hkeys(keys.user_index(users[0]))]
        else:
            raws = await asyncio.gather(
                *(self.store.client.hkeys(keys.user_index(u)) for u in users))
        out = []
        for user, raw in zip(users, raws, strict=True):
            entries = tuple(sorted(r.decode() for r in raw))
            if len(self._seen) >= self.cap:
                self._seen.clear()
            self._seen[user] = entries
            out.append(entries)
        return out

    def _sessions(self, platform: str, user: str, entries: Entries, session_id: str) -> list[str]:
        keys = self.store.keys
        out = []
        for entry in entries:
            # The index's entries, not the sessions: a stale entry (an expired session) costs
            # a "gone" verdict at apply, a HGETALL per session would cost every sync.
            sid = keys.session_id_of_key(keys.session_in_index(user, entry))
            if sid.startswith(platform + ":") and sid != session_id:
                out.append(sid)
        return out

    @staticmethod
    def _others(identities: Iterable[str], session_id: str) -> list[tuple[str, str]]:
        ident = parse_session_id(session_id)
        own = identity_name(ident.platform, ident.user_id)
        return [split_identity(who) for who in sorted(set(identities)) if who != own]

    async def of(self, identities: Iterable[str], session_id: str) -> list[str]:
        """The sessions of these identities other than ``session_id``'s own (read now)."""
        others = self._others(identities, session_id)
        read = await self._read([user for _, user in others])
        return sorted(sid for (platform, user), entries in zip(others, read, strict=True)
                      for sid in self._sessions(platform, user, entries, session_id))

    async def each(
        self, identities: Iterable[str], session_id: str, apply: Apply, *, remembered: bool
    ) -> dict[str, dict[str, str]]:
        """Apply to every session of these identities but ``session_id``; target -> result.

        With ``remembered``, an identity whose remembered index names a target is not read
        again: its applies carry the entries, and a stale answer reads it and goes on with
        what it now names (a target applied already is not applied twice).
        """
        results: dict[str, dict[str, str]] = {}
        others = self._others(identities, session_id)
        known: dict[str, Entries] = {}
        for platform, user in others if remembered else ():
            seen = self._seen.get(user)
            # A remembered index that names no target is read again: no apply would check it.
            if seen is not None and self._sessions(platform, user, seen, session_id):
                known[user] = seen
        unknown = [user for _, user in others if user not in known]
        if unknown:
            known.update(zip(unknown, await self._read(unknown), strict=True))
        for platform, user in others:
            entries = known[user]
            for attempt in range(8):  # the index changes under us only while sessions come and go
                targets = self._sessions(platform, user, entries, session_id)
                # The last attempt applies to the index as just read, unchecked (as a sync
                # without a remembered index does), so a busy index cannot starve a target.
                check = entries if remembered and attempt < 7 else None
                stale = False
                for target in targets:
                    if target in results:
                        continue
                    got = await apply(target, check)
                    if got is None:
                        stale = True
                        break
                    results[target] = got
                if not stale:
                    break
                [entries] = await self._read([user])
        return dict(sorted(results.items()))
