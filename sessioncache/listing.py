"""SessionStore's listing reads: a user's sessions (pruning index entries of ended ones) and
the namespace's session count (a mixin)."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError

from .errors import BackendUnavailable, IntegrityError, ValidationError
from .identity import parse_session_id, user_tag
from .keys import KeySchema
from .models import Session, session_from_hash
from .scripts import ScriptRegistry

log = logging.getLogger(__name__)


class ListingMethods:
    """Methods of SessionStore that read across sessions rather than one."""

    client: Any
    keys: KeySchema
    scripts: ScriptRegistry

    async def list_user_sessions(self, user_id: object) -> list[Session]:
        """Every live session of a user, across platforms, chats and threads (an empty list
        for an unknown user)."""
        tag = user_tag(user_id)
        index = self.keys.user_index(tag)
        try:
            suffixes = sorted(await self.client.hkeys(index))
            if not suffixes:
                return []
            keys = [self.keys.session_in_index(tag, s.decode()) for s in suffixes]
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                hashes = await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during list_user_sessions: {exc}") from exc
        sessions, gone = [], []
        for key, suffix, flat in zip(keys, suffixes, hashes, strict=True):
            if not flat:
                gone.append((key, suffix))
                continue
            sid = self.keys.session_id_of_key(key)
            try:
                sessions.append(session_from_hash(parse_session_id(sid), key, flat))
            except (ValidationError, IntegrityError) as exc:
                # One session this version cannot read (written by an older version under
                # other id rules, or damaged) must not hide the user's other sessions.
                log.warning("list_user_sessions skips session %r: %s", sid[:200], exc)
        if gone:
            await self.scripts.prune_index.run(
                self.client, [index, *(k for k, _ in gone)], [s for _, s in gone]
            )
        return sessions

    async def count(self) -> int:
        """Number of live sessions in the namespace (SCAN over every primary)."""
        total = 0
        try:
            async for _ in self.client.scan_iter(match=self.keys.session_pattern(), count=1000):
                total += 1
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during count: {exc}") from exc
        return total
