"""Transitions: the fleet's transition table (read, published by compare-and-set) and moving a
session between states (one script, guards and hooks around it)."""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError

from .arguments import check_version
from .codec import encode_value
from .errors import (
    BackendUnavailable,
    GuardRejected,
    InvalidTransition,
    SessionNotFound,
    TableConflict,
    ValidationError,
    VersionConflict,
)
from .events import EventLog
from .identity import Identity
from .metrics import Metrics
from .models import Session, session_from_hash
from .states import StateHooks, TransitionTable, check_state
from .store import SessionStore

log = logging.getLogger(__name__)

_GUARD_RETRIES = 3


class Transitions:
    """The state machine of a SessionStore: its table, hooks and the transition operation."""

    def __init__(
        self,
        store: SessionStore,
        events: EventLog,
        metrics: Metrics,
        *,
        table: TransitionTable,
        refresh: float,
    ) -> None:
        self.store = store
        self.events = events
        self.metrics = metrics
        self.table = table
        self.hooks = StateHooks()
        self.refresh = refresh
        self._table_read = 0.0
        self._table_json: bytes | None = None

    async def load_table(self) -> TransitionTable | None:
        """The fleet's current table (also made this process's table), or None if none."""
        try:
            raw = await self.store.client.get(self.store.keys.transitions())
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading the table: {exc}") from exc
        self._table_read = time.monotonic()
        if raw is None:
            return None
        if raw != self._table_json:
            # Parsed only when it changed, so the table's per-target script arguments stay cached.
            self.table = TransitionTable.from_json(raw)
            self._table_json = raw
        return self.table

    async def publish_table(self, table: TransitionTable) -> TransitionTable:
        """Store a table as the fleet's next version (compare-and-set on the version read).

        TableConflict if other processes kept publishing through five attempts.
        """
        for _ in range(5):
            current = await self.load_table()
            base = current.version if current else 0
            if current is not None and current.same_rules(table):
                return current
            new = table.with_version(base + 1)
            reply = await self.store.scripts.publish_table.run(
                self.store.client,
                [self.store.keys.transitions()],
                [str(base), new.to_json()],
            )
            if reply[0] == 1:
                self.table = new
                self._table_read = time.monotonic()
                return new
        raise TableConflict(base, int(reply[1]))

    async def current_table(self) -> TransitionTable:
        """This process's table, re-read from the fleet when older than ``refresh`` seconds."""
        if time.monotonic() - self._table_read > self.refresh:
            await self.load_table()
        return self.table

    async def transition(
        self,
        session_id: str,
        to_state: str,
        *,
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> Session:
        """Move a session to ``to_state`` if the table (and any guard) allows it.

        InvalidTransition names the current state and the allowed targets; nothing is written
        then. SessionNotFound if the session does not exist. on_exit/on_enter hooks run after
        the write committed.
        """
        with self.metrics.measure("transition"):
            session, source = await self._transition(
                session_id, to_state, expected_version, reason
            )
        if source is not None and self.hooks.active:
            await self._run_hooks(session, source)
        return session

    async def _transition(
        self, session_id: str, to_state: str, expected_version: int | None, reason: str | None
    ) -> tuple[Session, str | None]:
        table = await self.current_table()
        # Fast path: a known state name needs no further validation.
        known = isinstance(to_state, str) and to_state in table.states
        target = str(to_state) if known else check_state(to_state, "to_state")
        if target not in table.states:
            raise ValidationError(
                f"unknown state {target!r}; the transition table knows: "
                + ", ".join(sorted(table.states))
            )
        if reason is not None and (not isinstance(reason, str) or len(reason) > 256):
            raise ValidationError("reason must be a str of at most 256 characters")
        check_version(expected_version)
        ident, keys, _ = self.events.locate(session_id)
        if not self.hooks.has_guards(target):
            return await self._apply(
                session_id, ident, keys, target, table, expected_version, reason
            )
        conflict: VersionConflict | None = None
        for _ in range(_GUARD_RETRIES):
            current = await self.store.get(session_id)
            if expected_version is not None and current.version != expected_version:
                raise VersionConflict(session_id, expected_version, current.version)
            allowed = table.targets(ident.platform, current.state)
            if target not in allowed:
                raise InvalidTransition(session_id, current.state, target, allowed)
            if not await self.hooks.check(current, current.state, target):
                raise GuardRejected(session_id, current.state, target, allowed)
            try:
                # The guard saw this version: apply only if nobody changed the session since.
                return await self._apply(
                    session_id, ident, keys, target, table, current.version, reason
                )
            except VersionConflict as exc:
                if expected_version is not None:
                    raise
                conflict = exc
        assert conflict is not None
        raise conflict

    async def _apply(
        self,
        sid: str,
        ident: Identity,
        keys: list[str],
        target: str,
        table: TransitionTable,
        expected_version: int | None,
        reason: str | None,
    ) -> tuple[Session, str | None]:
        args = [
            target,
            check_version(expected_version),
            "" if reason is None else encode_value(reason),
            table.script_arg(ident.platform, target, self.events.max_len, self.events.max_age_ms),
        ]
        reply = await self.store.scripts.transition.run(
            self.store.client,
            [keys[0], keys[2], keys[3], keys[5], keys[6]],
            self.store.op_args(args),
        )
        status = reply[0]
        if status == 1:
            return session_from_hash(ident, keys[0], reply[1]), reply[2].decode()
        if status == 2:
            return session_from_hash(ident, keys[0], reply[1]), None
        if status == -1:
            raise SessionNotFound(sid)
        if status == -2:
            raise VersionConflict(sid, int(expected_version or 0), int(reply[1]))
        current = reply[1].decode()
        raise InvalidTransition(sid, current, target, table.targets(ident.platform, current))

    async def _run_hooks(self, session: Session, source: str) -> None:
        for hook in self.hooks.hooks_for(source, session.state):
            began = time.perf_counter()
            try:
                result = hook(session, source, session.state)
                if result is not None:
                    await result
            except Exception:
                # The transition is committed; a failing hook must not pretend otherwise.
                log.exception("state hook %r failed for %s", hook, session.session_id)
                self.metrics.observe("hook", time.perf_counter() - began, True)
            else:
                self.metrics.observe("hook", time.perf_counter() - began)
