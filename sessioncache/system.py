"""SessionSystem: the facade bot code talks to, and initialize_sessions() that builds it."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .batch import Batch
from .codec import DEFAULT_LIMITS, Limits
from .coherent import CoherentCache
from .context import ContextConfig, SessionContext
from .conversation import ConversationMethods
from .errors import (
    AlreadyInitialized,
    SessionCacheError,
    SessionExpired,
    SessionNotFound,
    ValidationError,
)
from .events import Event, EventType
from .expiry import ArchivedSession, ExpiryEngine, ExpiryInfo, ExpiryReport
from .expiry.rules import Rule, load_rules_toml, parse_rules
from .fleet import FleetJob
from .health import HealthMonitor, register_core_checks
from .identity_links import IdentityLinks, LinkConfig
from .models import Platform, Session, SessionState
from .nearcache import NearCacheConfig
from .patterns import PatternReport
from .persistence import BackupInfo, Persistence, RestoreReport, VerifyReport
from .persistence.restore import Decide
from .persistence.scheduler import BackupScheduler
from .prediction import LifecyclePrediction
from .scopes import check_scope
from .statistics import StatisticsReport
from .storage import Storage, default_data_dir, redact, resolve_storage
from .store import DEFAULT_TTL, SessionStore
from .sync import SyncConfig, SyncManager
from .sync_methods import SyncMethods
from .tracker import StateTracker, TrackerConfig
from .turns import Turns

log = logging.getLogger(__name__)

_memory_warned = False
T = TypeVar("T")


@dataclass(repr=False)
class SessionSystemConfig:
    """Every keyword argument of initialize_sessions(), so ``initialize_sessions(**c.__dict__)``.

    ``storage_type`` None means: what ``storage_config`` implies, else $SESSIONCACHE_URL, else
    MEMORY. State tracking is always on; persistence works as soon as ``backup_dir`` is set.
    ``enable_all_features=True`` turns every feature on, with ``backup_dir`` and ``archive_dir``
    defaulting to ``backups/`` and ``archive/`` under the data directory (docs/configuration.md).
    """

    storage_type: str | None = None
    storage_config: dict[str, Any] | None = None
    enable_all_features: bool = False
    namespace: str = "sc"
    default_ttl: float = DEFAULT_TTL
    limits: Limits = field(default_factory=lambda: DEFAULT_LIMITS)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    health_interval: float | None = 30.0
    """Seconds between background health checks that restart failed components (None: off)."""
    # Persistence (docs/persistence.md)
    backup_dir: str | os.PathLike[str] | None = None
    archive_dir: str | os.PathLike[str] | None = None
    snapshot_dir: str | os.PathLike[str] | None = None
    backup_key: str | bytes | None = field(default=None, repr=False)
    backup_format: str = "msgpack.gz"
    backup_events: bool = False
    """Also back up each session's event stream (create_backup(events=...) overrides it)."""
    backup_interval: float | None = None
    backup_full_every: int = 24
    backup_keep_last: int | None = None
    backup_max_age: float | None = None
    snapshot_interval: float | None = None
    snapshot_keep_last: int | None = None
    # Context, near cache and turns (docs/context.md)
    context: ContextConfig = field(default_factory=ContextConfig)
    near_cache: bool | NearCacheConfig = False
    """True (or a NearCacheConfig) to serve session and context reads from process memory."""
    turn_lease: float = 30.0
    # Expiry (docs/expiry.md)
    expiry_rules: Any = None
    """Ordered rules: a list of rule dicts, or the path of a TOML file of ``[[rule]]`` tables."""
    expiry_interval: float = 60.0
    """Seconds between sweeps (once per interval across the fleet)."""
    expiry_archive_retention: float = 30 * 86400.0
    """How long archived sessions stay in Redis (archive_dir keeps a file copy)."""
    expiry_notify: Any = None
    """Called with an ExpiryNotice for each warning and notify action (sync or async)."""
    # Cross-channel sync (docs/sync.md)
    session_scope: str = "chat_user_thread"
    """chat_user_thread, person or chat (scoped_session())."""
    sync_mode: str = "auto"
    """manual, auto, delayed or batch."""
    sync_strategy: Any = "lww"
    """lww, fww, merge, priority, manual, or a callable (field, stored, incoming) -> value."""
    sync_shared_fields: Any = ()
    """Data fields linked sessions share, or "*"."""
    sync_priority: tuple[str, ...] = ()
    """Platforms in priority order for sync_strategy "priority"."""
    sync_delay: float = 2.0
    """Seconds a "delayed" sync waits; also the batch job's interval."""
    link_code_ttl: float = 600.0
    """Seconds a link code stays redeemable."""

    def __post_init__(self) -> None:
        if isinstance(self.expiry_rules, (str, Path)):
            self.expiry_rules = load_rules_toml(self.expiry_rules)
        else:
            self.expiry_rules = parse_rules(self.expiry_rules)
        if self.expiry_notify is not None and not callable(self.expiry_notify):
            raise ValidationError("expiry_notify must be a callable given an ExpiryNotice")
        if not isinstance(self.tracker, TrackerConfig):
            raise ValidationError(
                f"tracker options must be a TrackerConfig, not {type(self.tracker).__name__}"
            )
        check_scope(self.session_scope)
        self.sync_config()  # validates the sync options
        if not isinstance(self.enable_all_features, bool):
            raise ValidationError(
                f"enable_all_features must be a bool, got {self.enable_all_features!r}"
            )
        if self.storage_config is not None and not isinstance(self.storage_config, Mapping):
            raise ValidationError(f"storage_config must be a dict, got {self.storage_config!r}")
        interval = self.health_interval
        if interval is not None and (
            isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0
        ):
            raise ValidationError(f"health_interval must be a positive number, got {interval!r}")

    def sync_config(self) -> SyncConfig:
        """The sync options as a SyncConfig."""
        return SyncConfig(
            shared_fields=self.sync_shared_fields,
            strategy=self.sync_strategy,
            mode=self.sync_mode,
            priority=tuple(self.sync_priority),
            delay=self.sync_delay,
        )

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={redact(getattr(self, f.name), f.name)!r}" for f in fields(self)
        )
        return f"SessionSystemConfig({shown})"

    @classmethod
    def option_names(cls) -> list[str]:
        """The names initialize_sessions() accepts."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_options(cls, **options: Any) -> SessionSystemConfig:
        """A config from keyword options; unknown options raise, listing the known ones."""
        unknown = sorted(set(options) - set(cls.option_names()))
        if unknown:
            raise ValidationError(
                f"unknown option(s) {', '.join(unknown)} for initialize_sessions(); "
                f"known: {', '.join(cls.option_names())}"
            )
        return cls(**options)

    def with_feature_dirs(self, data_dir: Path) -> SessionSystemConfig:
        """With enable_all_features: backup_dir/archive_dir defaulted under ``data_dir``."""
        if not self.enable_all_features:
            return self
        return replace(
            self,
            backup_dir=self.backup_dir if self.backup_dir is not None else data_dir / "backups",
            archive_dir=self.archive_dir if self.archive_dir is not None else data_dir / "archive",
        )


class _OpenOrStart:
    """``SessionSystem.start``: on an instance, start its components; on the class, what the
    classmethod of that name always did (build, connect and start: ``SessionSystem.open``)."""

    def __get__(self, obj: SessionSystem | None, owner: type[SessionSystem]) -> Any:
        return owner.open if obj is None else obj._start


class SessionSystem(ConversationMethods, SyncMethods):
    """One object for bot code: the core store plus the features built on it.

    Not-found contract, the same on every surface (SessionStore, SessionSystem and the
    module-level functions): reads return None for a missing session (get_session,
    SessionStore.find/find_by_id; SessionStore.get is the one read that raises
    SessionNotFound); writes raise SessionNotFound (update, touch, transition, track_event);
    delete returns False; listings return what exists.

    Build it with ``await SessionSystem.open(...)`` (or initialize_sessions()); ``start()``
    and ``shutdown()`` (or ``async with``) run the components' lifecycle. Components hang off
    it by name: ``tracker``, ``persistence``, ``expiry``, ``sync``, ``context``.
    """

    def __init__(
        self, store: SessionStore, config: SessionSystemConfig, *, storage: Storage | None = None
    ) -> None:
        self.store = store
        self.storage = storage
        self.config = config = config.with_feature_dirs(
            storage.data_dir if storage is not None else default_data_dir()
        )
        self._started = time.monotonic()
        self._running = False
        self._closed = False
        self.health = HealthMonitor()
        self.tracker = StateTracker(store, config.tracker)
        self.persistence = Persistence(
            store,
            backup_dir=config.backup_dir,
            archive_dir=config.archive_dir,
            snapshot_dir=config.snapshot_dir,
            key=config.backup_key,
            format=config.backup_format,
            events=config.backup_events,
            keep_last=config.backup_keep_last,
            max_age=config.backup_max_age,
            snapshot_keep_last=config.snapshot_keep_last,
        )
        self.near_cache: CoherentCache | None = None
        self.context = SessionContext(store, config.context)
        self.turns = Turns(store, lease=config.turn_lease)
        self.batch = Batch(store)
        self.backup_scheduler: BackupScheduler | None = self._new_backup_scheduler()
        rules: tuple[Rule, ...] = config.expiry_rules
        self.expiry = ExpiryEngine(
            store,
            self.tracker,
            rules,
            archive_dir=config.archive_dir,
            archive_retention=config.expiry_archive_retention,
            interval=config.expiry_interval,
            notify=config.expiry_notify,
        )
        self.expiry_scheduler: AsyncIOScheduler | None = None
        if rules:
            self.expiry_scheduler = AsyncIOScheduler(timezone="UTC")
            self.expiry.schedule(self.expiry_scheduler)
        self.session_scope = config.session_scope
        self.sync = SyncManager(
            store,
            IdentityLinks(store.client, store.keys, LinkConfig(code_ttl=config.link_code_ttl)),
            config.sync_config(),
        )
        self.sync_scheduler: AsyncIOScheduler | None = None
        if config.sync_mode == "batch":
            self.sync_scheduler = AsyncIOScheduler(timezone="UTC")
            self.sync_job = FleetJob(
                store.client, store.keys, "sync", config.sync_delay, self.sync.run_batch
            )
            self.sync_job.schedule(self.sync_scheduler)
        register_core_checks(self)

    def _new_backup_scheduler(self) -> BackupScheduler | None:
        config = self.config
        if not (config.backup_interval or config.snapshot_interval):
            return None
        return BackupScheduler(
            self.persistence,
            backup_interval=config.backup_interval,
            full_every=config.backup_full_every,
            snapshot_interval=config.snapshot_interval,
        )

    @classmethod
    async def open(
        cls,
        storage_type: str | None = None,
        storage_config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> SessionSystem:
        """Resolve the storage (starting or joining an EMBEDDED server), connect, start."""
        config = SessionSystemConfig.from_options(
            storage_type=storage_type,
            storage_config=dict(storage_config) if storage_config is not None else None,
            **options,
        )
        return await cls.from_config(config)

    @classmethod
    async def from_config(cls, config: SessionSystemConfig) -> SessionSystem:
        """A started system for a config."""
        storage = resolve_storage(config.storage_type, config.storage_config)
        if storage.server is not None:
            await asyncio.to_thread(storage.server.attach)
        try:
            store = await SessionStore.connect(
                storage.url,
                namespace=config.namespace,
                default_ttl=config.default_ttl,
                limits=config.limits,
                extras=[config.tracker.store_extras()],
                **storage.connection,
            )
        except BaseException:
            if storage.server is not None:
                await asyncio.to_thread(storage.server.detach)
            raise
        try:
            system = cls(store, config, storage=storage)
            await system._start()
            if config.near_cache:
                await system.enable_near_cache(storage.url, config.near_cache)
        except BaseException:
            await store.close()
            if storage.server is not None:
                await asyncio.to_thread(storage.server.detach)
            raise
        return system

    start = _OpenOrStart()

    async def _start(self) -> SessionSystem:
        """Start the components (tracker, schedulers, health monitor); idempotent."""
        if self._running:
            return self
        if self._closed:
            raise SessionCacheError("this SessionSystem was shut down; open a new one")
        await self.tracker.start()
        if self.backup_scheduler is not None:
            self.backup_scheduler.start()
        if self.expiry_scheduler is not None:
            self.expiry_scheduler.start()
        if self.sync_scheduler is not None:
            self.sync_scheduler.start()
        if self.config.health_interval:
            self.health.start(self.config.health_interval)
        self._running = True
        global _memory_warned
        if self.storage is not None and self.storage.kind == "MEMORY" and not _memory_warned:
            _memory_warned = True
            log.warning(
                "storage MEMORY keeps sessions inside this process: other processes do not "
                "share them; use EMBEDDED, REDIS or CLUSTER (or set SESSIONCACHE_URL) for a fleet"
            )
        return self

    # -- sessions -------------------------------------------------------------------------
    # The same operations as SessionStore, in the same argument order (identity first:
    # chat_id, user_id, platform, thread_id), with the origin API's names and one difference
    # in the not-found contract: get_session() returns None where SessionStore.get() raises.

    async def create_session(
        self,
        chat_id: str | int,
        user_id: str | int,
        platform: Platform | str = Platform.WEB,
        thread_id: str | int | None = None,
        *,
        data: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        state: str = SessionState.NEW,
        priority: int = 0,
        ttl: float | None = None,
    ) -> Session:
        """Create a session; SessionExists if this identity already has one."""
        session = await self.store.create(
            chat_id,
            user_id,
            platform,
            thread_id,
            data=data,
            metadata=metadata,
            state=state,
            priority=priority,
            ttl=ttl,
        )
        if self.expiry.rules:
            await self.expiry.arm(session)
        return session

    async def get_or_create_session(
        self,
        chat_id: str | int,
        user_id: str | int,
        platform: Platform | str = Platform.WEB,
        thread_id: str | int | None = None,
        *,
        data: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        state: str = SessionState.NEW,
        priority: int = 0,
        ttl: float | None = None,
    ) -> Session:
        """The identity's session, created with the given contents if it does not exist
        (one atomic step: racing callers end with one session). With expiry rules, a session
        past its deadline has its rule applied once and a fresh one is returned."""
        if self.expiry.rules:
            return await self.expiry.get_or_create(
                self.store.identity(chat_id, user_id, platform, thread_id),
                data=data,
                metadata=metadata,
                state=state,
                priority=priority,
                ttl=ttl,
            )
        return await self.store.get_or_create(
            chat_id,
            user_id,
            platform,
            thread_id,
            data=data,
            metadata=metadata,
            state=state,
            priority=priority,
            ttl=ttl,
        )

    async def get_session(self, session_id: str, *, fresh: bool = False) -> Session | None:
        """The session, or None if it does not exist (the origin API's contract; the store's
        equivalent is SessionStore.find_by_id(), while SessionStore.get() raises).

        With the near cache on, a recent read is served from process memory; ``fresh=True``
        always asks Redis. A session past its expiry deadline has its rule applied first
        (docs/expiry.md).
        """
        if self.near_cache is not None and not fresh:
            session = await self.near_cache.get_session(session_id)
        else:
            session = await self.store.find_by_id(session_id)
        if session is not None and await self.expiry.past_deadline(session):
            await self.expiry.on_access(session_id)
            self._written(session_id)
            session = await self.store.find_by_id(session_id)
        return session

    async def enable_near_cache(self, url: str, config: bool | NearCacheConfig = True) -> None:
        """Serve session and context reads from a near cache kept coherent by Redis."""
        settings = config if isinstance(config, NearCacheConfig) else NearCacheConfig()
        cache = CoherentCache(self.store, url, settings)
        await cache.start()
        self.near_cache = cache
        self.context.near_cache = cache.cache
        self.context.drain = cache.drain if cache.in_process else None
        self.batch.on_write = cache.written
        self.sync.on_write = cache.written_session

    async def update_session(
        self,
        session_id: str,
        data: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        delete: Iterable[str] = (),
        delete_metadata: Iterable[str] = (),
        priority: int | None = None,
        expected_version: int | None = None,
    ) -> Session:
        """Merge data and metadata fields (and delete some) in one atomic step; see
        SessionStore.update(). SessionNotFound if the session does not exist."""
        try:
            session = await self._write(
                session_id,
                lambda: self.store.update(
                    session_id,
                    data,
                    metadata,
                    delete=delete,
                    delete_metadata=delete_metadata,
                    priority=priority,
                    expected_version=expected_version,
                ),
            )
        finally:
            self._written(session_id)
        if self.sync.config.shared_fields and (data or delete):
            # Shared fields are stamped (and synced as sync_mode says); see docs/sync.md.
            await self.sync.write(session.session_id, data or {}, delete)
            session = await self.store.get(session.session_id)
        return session

    async def delete_session(self, session_id: str) -> bool:
        """Remove a session and its context; True if the session existed, False if it did
        not (never raises for that)."""
        existed = await self.store.delete(session_id)
        await self.context.delete_context(session_id)
        await self.sync.forget(session_id)
        self._written(session_id)
        return existed

    def _written(self, session_id: str) -> None:
        if self.near_cache is not None:
            self.near_cache.written_session(session_id)

    async def touch_session(
        self, session_id: str, *, messages: int = 0, ttl: float | None = None
    ) -> dt.datetime:
        """Record activity (and messages), refresh the TTL; returns the new expiry.
        SessionNotFound if the session does not exist."""
        try:
            return await self._write(
                session_id, lambda: self.store.touch(session_id, messages=messages, ttl=ttl)
            )
        finally:
            self._written(session_id)

    async def _write(self, session_id: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run a write; if the session had passed its expiry deadline (the script refused the
        write), apply the rule once and run the write again on the session that follows, so
        the write (a user's message) is never lost and never revives the stale session.

        A write that finds no session right after another process ended it by expiry (in the
        instant before that process creates the successor) goes to the successor too."""
        for _ in range(3):
            try:
                return await call()
            except SessionExpired:
                if await self.expiry.on_access(session_id):
                    await self.expiry.successor_for(session_id)
            except SessionNotFound:
                if not await self.expiry.recently_ended(session_id):
                    raise
                await self.expiry.successor_for(session_id)
        return await call()

    async def list_user_sessions(self, user_id: str | int) -> list[Session]:
        """Every live session of a user (an empty list for an unknown user)."""
        return await self.store.list_user_sessions(user_id)

    async def count_sessions(self) -> int:
        """Number of live sessions in the namespace (a SCAN: an admin call, not a hot path)."""
        return await self.store.count()

    # -- state tracking (sessioncache.tracker) -------------------------------------------------

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

    async def track_event(
        self, session_id: str, event_type: EventType | str, **fields: Any
    ) -> str | None:
        """Append an event to the session's stream; its id, or None if a retry found it
        already applied. SessionNotFound if the session does not exist."""
        return await self._write(
            session_id, lambda: self.tracker.track_event(session_id, event_type, **fields)
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

    def get_performance_metrics(self) -> dict[str, dict[str, Any]]:
        """Per operation of this process: count, errors and latency percentiles (ms)."""
        metrics = self.tracker.get_performance_metrics()
        if self.near_cache is not None:
            metrics["near_cache"] = self.near_cache.summary()
        return metrics

    async def health_check(self, *, restart: bool = True) -> dict[str, Any]:
        """Each component's health and the overall status; failed components are restarted
        (unless ``restart`` is False) and the restart reported (sessioncache.health).

        Scripts the server lost (a restart, a failover to a replica that never loaded them,
        SCRIPT FLUSH) are loaded again here, so a readiness probe reports healthy as soon as
        calls work; ``reloaded_scripts`` names what was reloaded."""
        report = await self.health.check(restart=restart)
        redis = report["components"].get("redis", {})
        scripts = report["components"].get("scripts", {})
        report.update(
            ping_ms=redis.get("ping_ms"),
            missing_scripts=scripts.get("missing", []),
            reloaded_scripts=scripts.get("failed_with", {}).get("missing", [])
            if scripts.get("restarted")
            else [],
            cluster=self.store.is_cluster,
            namespace=self.store.keys.namespace,
            uptime_s=round(time.monotonic() - self._started, 3),
        )
        if not report["healthy"]:
            failed = report["components"][report["failed"][0]]
            report["error"] = failed.get("error") or f"{report['failed'][0]} failed"
        return report

    # -- expiry (docs/expiry.md) -------------------------------------------------------------

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

    # -- persistence (docs/persistence.md) ------------------------------------------------

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

    async def shutdown(self) -> None:
        """Stop every component, close the connections, leave the EMBEDDED server (the last
        process out stops it with a save)."""
        if not self._closed:
            self._closed = True
            self._running = False
            await self.health.stop()
            if self.backup_scheduler is not None:
                self.backup_scheduler.shutdown()
                # AsyncIOScheduler.shutdown() runs through call_soon: give it that loop turn.
                await asyncio.sleep(0)
            if self.expiry_scheduler is not None and self.expiry_scheduler.running:
                self.expiry_scheduler.pause()
                await self.expiry.job.drain()
                self.expiry_scheduler.shutdown(wait=False)
                await asyncio.sleep(0)
            if self.sync_scheduler is not None and self.sync_scheduler.running:
                self.sync_scheduler.pause()
                await self.sync_job.drain()
                self.sync_scheduler.shutdown(wait=False)
                await asyncio.sleep(0)
            await self.sync.flush()
            await self.context.wait_summaries()
            if self.near_cache is not None:
                await self.near_cache.stop()
            await self.store.close()
            if self.storage is not None and self.storage.server is not None:
                await asyncio.to_thread(self.storage.server.detach)

    @property
    def closed(self) -> bool:
        """Whether shutdown() ran."""
        return self._closed

    async def __aenter__(self) -> SessionSystem:
        return await self._start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()


# -- the origin document's module-level API ------------------------------------------------

_current: SessionSystem | None = None
_current_args: tuple[Any, ...] = ()


def _same_args(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    try:
        return bool(a == b)
    except Exception:  # a value whose == raises (an odd storage_config entry): not the same
        return False


async def initialize_sessions(
    storage_type: str | None = None,
    storage_config: Mapping[str, Any] | None = None,
    enable_all_features: bool = False,
    *,
    replace: bool = False,
    **options: Any,
) -> SessionSystem:
    """Build the session system and make it the one the module-level functions use.

    Takes exactly the fields of SessionSystemConfig (so ``initialize_sessions(**c.__dict__)``),
    plus ``replace``; no ``storage_type``: $SESSIONCACHE_URL, else MEMORY.

    Called again while a system is running: with the same arguments it returns the running
    system (two modules may both initialise); with different ones it raises
    AlreadyInitialized, unless ``replace=True``: then the new system is started and made
    current first, and the old one is shut down after (calls still running on the old one
    may fail). ``shutdown_sessions()`` ends the running system.
    """
    global _current, _current_args
    args = (str(storage_type).upper(), dict(storage_config or {}), enable_all_features, options)
    running = _current if _current is not None and not _current.closed else None
    if running is not None and not replace:
        if _same_args(args, _current_args):
            return running
        raise AlreadyInitialized()
    system = await SessionSystem.open(
        storage_type, storage_config, enable_all_features=enable_all_features, **options
    )
    racing = _current if _current is not None and not _current.closed else None
    if racing is not None and racing is not running and not replace:
        # Another initialize_sessions() finished while this one was connecting.
        await system.shutdown()
        if _same_args(args, _current_args):
            return racing
        raise AlreadyInitialized()
    previous, _current, _current_args = racing, system, args
    if previous is not None:
        await previous.shutdown()
    return system


def current_system() -> SessionSystem:
    """The system initialize_sessions() made; SessionCacheError if there is none."""
    if _current is None:
        raise SessionCacheError("call 'await initialize_sessions()' before using sessions")
    return _current


async def create_session(
    chat_id: str | int,
    user_id: str | int,
    platform: Platform | str = Platform.WEB,
    thread_id: str | int | None = None,
    **options: Any,
) -> Session:
    """SessionSystem.create_session() on the current system (SessionExists if it exists)."""
    return await current_system().create_session(
        chat_id, user_id, platform, thread_id, **options
    )


async def get_or_create_session(
    chat_id: str | int,
    user_id: str | int,
    platform: Platform | str = Platform.WEB,
    thread_id: str | int | None = None,
    **options: Any,
) -> Session:
    """SessionSystem.get_or_create_session() on the current system."""
    return await current_system().get_or_create_session(
        chat_id, user_id, platform, thread_id, **options
    )


async def get_session(session_id: str) -> Session | None:
    """The session, or None if it does not exist."""
    return await current_system().get_session(session_id)


async def update_session(
    session_id: str,
    data: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    **options: Any,
) -> Session:
    """SessionSystem.update_session() on the current system (SessionNotFound if missing)."""
    return await current_system().update_session(session_id, data, metadata, **options)


async def delete_session(session_id: str) -> bool:
    """Remove a session; True if it existed, False if it did not."""
    return await current_system().delete_session(session_id)


async def touch_session(
    session_id: str, *, messages: int = 0, ttl: float | None = None
) -> dt.datetime:
    """Record activity and refresh the TTL; SessionNotFound if the session does not exist."""
    return await current_system().touch_session(session_id, messages=messages, ttl=ttl)


async def list_user_sessions(user_id: str | int) -> list[Session]:
    """Every live session of a user (an empty list for an unknown user)."""
    return await current_system().list_user_sessions(user_id)


async def shutdown_sessions() -> None:
    """Close the system made by initialize_sessions() (a no-op if there is none)."""
    global _current, _current_args
    if _current is not None:
        system, _current, _current_args = _current, None, ()
        await system.shutdown()
