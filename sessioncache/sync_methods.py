"""SessionSystem's methods for identity links, scopes and cross-channel sync (a mixin).

Kept out of system.py so that file stays a thin facade; each method hands over to
``self.sync`` (sync.py) or its identity links (identity_links.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .identity_links import identity_name
from .models import Platform, Session
from .scopes import PERSON_PLATFORM, scoped_identity
from .store import SessionStore
from .sync import Conflict, SyncManager
from .sync_history import SyncRecord


class SyncMethods:
    """Flat methods of SessionSystem over ``self.sync``."""

    sync: SyncManager
    store: SessionStore
    session_scope: str
    get_or_create_session: Callable[..., Awaitable[Session]]

    async def start_link(self, platform: Platform | str, user_id: str | int) -> str:
        """A one-time code to confirm from another channel (IdentityLinks.start_link)."""
        return await self.sync.links.start_link(platform, user_id)

    async def confirm_link(
        self, platform: Platform | str, user_id: str | int, code: str
    ) -> str:
        """Link this identity with the code's; returns the person id (IdentityLinks)."""
        return await self.sync.links.confirm_link(platform, user_id, code)

    async def unlink(self, platform: Platform | str, user_id: str | int) -> bool:
        """Stop sharing: the identity leaves its person; each side keeps its data."""
        return await self.sync.links.unlink(platform, user_id)

    async def linked_identities(self, platform: Platform | str, user_id: str | int) -> list[str]:
        """The person's identities (``platform:user``), this one included."""
        return await self.sync.links.linked_identities(platform, user_id)

    async def scoped_identity(
        self,
        chat_id: str | int,
        user_id: str | int,
        platform: Platform | str,
        thread_id: str | int | None,
        chat_type: str = "private",
    ) -> tuple[Any, Any, Any, Any]:
        """(chat, user, platform, thread) a message is stored under by ``session_scope``:
        every entry path that resolves a session for a chat and user goes through here.
        ScopeError for a scope that would mix two people's direct messages."""
        person = None
        if self.session_scope == "person":
            person = await self.sync.links.person_of(platform, user_id)
        plat, chat, user, thread = scoped_identity(
            self.session_scope, platform, chat_id, user_id, thread_id,
            person=person, chat_type=chat_type,
        )
        return chat, user, plat, thread

    async def list_user_sessions(
        self, user_id: str | int, *, platform: Platform | str | None = None
    ) -> list[Session]:
        """Every live session of a user (an empty list for an unknown user). In session_scope
        "person", also the unified session of the person the user is linked as: on
        ``platform``, or without it on any platform the user has sessions on or a built-in
        one (a user id shared by two people on two platforms lists both, as their per-platform
        sessions are; pass ``platform`` to list one identity's)."""
        sessions = await self.store.list_user_sessions(user_id)
        if self.session_scope == "person":
            sessions += await self.person_sessions(user_id, platform, sessions)
        return sessions

    async def person_sessions(
        self, user_id: str | int, platform: Platform | str | None, listed: list[Session]
    ) -> list[Session]:
        """The unified sessions (scope "person") of the persons this user id is linked as,
        on ``platform`` or (None) on the platforms of ``listed`` and the built-in ones; those
        already in ``listed`` left out. One HMGET, then one user index read per person."""
        if platform is not None:
            platforms = {str(platform)}
        else:
            platforms = {str(p) for p in Platform} | {
                str(s.platform) for s in listed if str(s.platform) != PERSON_PLATFORM}
        persons = await self.sync.links.persons_of(
            sorted(identity_name(p, user_id) for p in platforms))
        seen = {s.session_id for s in listed}
        out = []
        for person in persons:
            for s in await self.store.list_user_sessions(person):
                if str(s.platform) == PERSON_PLATFORM and s.session_id not in seen:
                    seen.add(s.session_id)
                    out.append(s)
        return out

    async def pull_shared(self, session: Session) -> Session:
        """A new session of a linked identity takes the person's shared fields (the create
        op); unchanged without shared fields, in scope "person" (one session: nothing to
        pull) and for a session already written."""
        if (not self.sync.config.shared_fields or session.version != 1
                or self.session_scope == "person"):
            return session
        if await self.sync.pull(session.session_id):
            session = await self.store.get(session.session_id)
        return session

    async def scoped_session(
        self,
        chat_id: str | int,
        user_id: str | int,
        platform: Platform | str = Platform.WEB,
        thread_id: str | int | None = None,
        *,
        chat_type: str = "private",
    ) -> Session:
        """The session a message belongs to under ``session_scope`` (created if missing);
        the same as get_or_create_session(), kept for its name."""
        return await self.get_or_create_session(
            chat_id, user_id, platform, thread_id, chat_type=chat_type)

    async def sync_sessions(self, session_id: str) -> dict[str, dict[str, str]]:
        """Apply the session's shared fields to its linked sessions now (target -> field ->
        applied/kept/conflict)."""
        return await self.sync.sync_sessions(session_id)

    async def list_conflicts(self, session_id: str | None = None) -> list[Conflict]:
        """Conflicts kept for review by strategy "manual"."""
        return await self.sync.list_conflicts(session_id)

    async def resolve_conflict(self, conflict_id: str, choose: Any = "incoming") -> Conflict:
        """Settle a conflict with "incoming", "stored" or a value, once (one script: a second
        call gets ValidationError "no conflict" and writes nothing); synced to linked sessions."""
        return await self.sync.resolve_conflict(conflict_id, choose)

    async def sync_history(
        self, session_id: str | None = None, person: str | None = None, limit: int = 100
    ) -> list[SyncRecord]:
        """Sync operations, newest first, of a session or a person."""
        return await self.sync.history.query(session_id, person, limit)
