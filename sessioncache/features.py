"""SessionSystem's methods for state tracking, expiry and persistence (mixins).

Kept out of system.py so that file stays a facade; each method hands over to the component
named in its docstring (``self.tracker``, ``self.expiry``, ``self.persistence``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .events import Event
from .expiry import ArchivedSession, ExpiryEngine, ExpiryInfo, ExpiryReport
from .models import Session
from .patterns import PatternReport
from .persistence import BackupInfo, Persistence, RestoreReport, VerifyReport
from .persistence.restore import Decide
from .prediction import LifecyclePrediction
from .statistics import StatisticsReport
from .tracker import StateTracker


class TrackingMethods:
    """Flat methods of SessionSystem over ``self.tracker`` (sessioncache.tracker)."""

    tracker: StateTracker

    async def transition(
        self,
        session_id: str,
        to_state: str,
        *,
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> Session:
        """Move a session to ``to_state`` if the transition table allows it (InvalidTransition
        otherwise, nothing written). SessionNotFound if the session does not exist."""
        return await self.tracker.transition(
            session_id, to_state, expected_version=expected_version, reason=reason
        )

    async def get_events(self, session_id: str, **query: Any) -> list[Event]:
        """Events of a session, oldest first (StateTracker.get_events() for the query); an
        empty list if the session does not exist."""
        return await self.tracker.get_events(session_id, **query)

    async def get_statistics(self, **options: Any) -> StatisticsReport:
        """Fleet statistics from the shard counters (StateTracker.get_statistics())."""
        return await self.tracker.get_statistics(**options)

    async def analyze_patterns(self, **options: Any) -> PatternReport:
        """Activity profiles, state paths, bursts and churn (StateTracker.analyze_patterns())."""
        return await self.tracker.analyze_patterns(**options)

    async def predict_lifecycle(self, session_id: str, **options: Any) -> LifecyclePrediction:
        """Expected next activity and idle/expiry chances; SessionNotFound if the session does
        not exist (StateTracker.predict_lifecycle())."""
        return await self.tracker.predict_lifecycle(session_id, **options)


class ExpiryMethods:
    """Flat methods of SessionSystem over ``self.expiry`` (docs/expiry.md)."""

    expiry: ExpiryEngine

    async def cleanup_expired_sessions(self, dry_run: bool = False) -> ExpiryReport:
        """Run an expiry sweep now (the scheduler runs one per interval across the fleet)."""
        return await self.expiry.sweep(dry_run=dry_run)

    async def get_expiry_info(self, session_id: str) -> ExpiryInfo | None:
        """Which rule governs a session, when it fires and with what action (None: no such
        session)."""
        return await self.expiry.get_expiry_info(session_id)

    async def restore_archived(
        self, session_id: str, *, archive_id: str | None = None, replace: bool = False
    ) -> Session:
        """Bring an archived session back whole (its newest archive, or ``archive_id``)."""
        return await self.expiry.restore_archived(
            session_id, archive_id=archive_id, replace=replace
        )

    async def list_archived(self, user_id: str | int | None = None) -> list[ArchivedSession]:
        """Archived sessions (one user's, or all), oldest first."""
        return await self.expiry.archive.list_archived(user_id)


class PersistenceMethods:
    """Flat methods of SessionSystem over ``self.persistence`` (docs/persistence.md)."""

    persistence: Persistence

    async def create_backup(
        self,
        description: str = "",
        format: str | None = None,
        incremental: bool = False,
        *,
        events: bool | None = None,
    ) -> str:
        """A full or incremental backup; ``events``: also each session's event stream (None:
        the configured ``backup_events``)."""
        return await self.persistence.create_backup(description, format, incremental, events=events)

    def list_backups(self) -> list[BackupInfo]:
        """The backups in backup_dir, oldest first."""
        return self.persistence.list_backups()

    async def verify_backup(self, backup_id: str, *, allow_pickle: bool = False) -> VerifyReport:
        """Check a backup's signature, checksums and records without writing anything."""
        return await self.persistence.verify_backup(backup_id, allow_pickle=allow_pickle)

    async def restore_backup(
        self,
        backup_id: str,
        strategy: str = "merge",
        *,
        decide: Decide | None = None,
        allow_pickle: bool = False,
    ) -> RestoreReport:
        """Restore a backup (strategy merge, replace or skip_existing; docs/persistence.md)."""
        return await self.persistence.restore_backup(
            backup_id, strategy, decide=decide, allow_pickle=allow_pickle
        )

    async def export_session(
        self, session_id: str, path: str | None = None, *, format: str = "json"
    ) -> bytes | Path:
        """One session as a signed document (bytes, or written to ``path``); SessionNotFound
        if the session does not exist."""
        return await self.persistence.export_session(session_id, path, format=format)

    async def import_session(
        self,
        source: str | Path | bytes,
        strategy: str = "replace",
        *,
        decide: Decide | None = None,
        allow_pickle: bool = False,
    ) -> str:
        """Write a session from an exported document; returns its session id."""
        return await self.persistence.import_session(
            source, strategy, decide=decide, allow_pickle=allow_pickle
        )
