"""SessionSystem: the facade bot code talks to; its feature methods are mixins (features.py,
conversation.py), its options live in options.py and the module-level API in origin.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .batch import Batch
from .coherent import CoherentCache
from .component_checks import register_feature_checks, register_near_cache_check
from .context import SessionContext
from .conversation import ConversationMethods
from .errors import SessionCacheError, SessionExpired, SessionNotFound
from .events import EventType
from .expiry import ExpiryEngine
from .expiry.rules import Rule
from .features import ExpiryMethods, PersistenceMethods, TrackingMethods
from .fleet import FleetJob
from .health import HealthMonitor, register_core_checks
from .identity_links import IdentityLinks, LinkConfig
from .models import Platform, Session, SessionState
from .nearcache import NearCacheConfig
from .options import SessionSystemConfig
from .origin import (
    create_session,
    current_system,
    delete_session,
    get_or_create_session,
    get_session,
    initialize_sessions,
    list_user_sessions,
    shutdown_sessions,
    touch_session,
    update_session,
)
from .persistence import Persistence
from .persistence.scheduler import BackupScheduler
from .storage import Storage, default_data_dir, resolve_storage
from .store import SessionStore
from .sync import SyncManager
from .sync_methods import SyncMethods
from .tracker import StateTracker
from .turns import Turns

# SessionSystemConfig (options.py) and the module-level API (origin.py) are importable from
# here too, where they were defined before the split.
__all__ = [
    "SessionSystem",
    "SessionSystemConfig",
    "create_session",
    "current_system",
    "delete_session",
    "get_or_create_session",
    "get_session",
    "initialize_sessions",
    "list_user_sessions",
    "shutdown_sessions",
    "touch_session",
    "update_session",
]

log = logging.getLogger(__name__)

_memory_warned = False
T = TypeVar("T")


class _OpenOrStart:
    """``SessionSystem.start``: on an instance, start its components; on the class, what the
    classmethod of that name always did (build, connect and start: ``SessionSystem.open``)."""

    def __get__(self, obj: SessionSystem | None, owner: type[SessionSystem]) -> Any:
        return owner.open if obj is None else obj._start


class SessionSystem(
    ConversationMethods, TrackingMethods, ExpiryMethods, PersistenceMethods, SyncMethods
):
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
            effect_lease=config.expiry_effect_lease,
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
        register_feature_checks(self)

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
        chat_type: str = "private",
    ) -> Session:
        """Create the session ``session_scope`` gives this chat and user (as in
        get_or_create_session()); SessionExists if it exists."""
        chat_id, user_id, platform, thread_id = await self.scoped_identity(
            chat_id, user_id, platform, thread_id, chat_type
        )
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
        return await self.pull_shared(session)

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
        chat_type: str = "private",
    ) -> Session:
        """The identity's session, created with the given contents if it does not exist
        (one atomic step: racing callers end with one session). With expiry rules, a session
        past its deadline has its rule applied once and a fresh one is returned.

        Which session is the one ``session_scope`` gives this chat and user: per chat, user
        and thread (default), the linked person's one session ("person"), or the group's
        ("chat", with ``chat_type="group"``; ScopeError for a direct message). A new session
        of a linked identity takes the person's shared fields (docs/sync.md)."""
        chat_id, user_id, platform, thread_id = await self.scoped_identity(
            chat_id, user_id, platform, thread_id, chat_type
        )
        if self.expiry.rules:
            session = await self.expiry.get_or_create(
                self.store.identity(chat_id, user_id, platform, thread_id), data=data,
                metadata=metadata, state=state, priority=priority, ttl=ttl)
        else:
            session = await self.store.get_or_create(
                chat_id, user_id, platform, thread_id, data=data, metadata=metadata,
                state=state, priority=priority, ttl=ttl)
        return await self.pull_shared(session)

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
        register_near_cache_check(self, cache)
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
        # With shared fields configured, the update stamps them in the same script (one
        # version) and syncs them as sync_mode says; see docs/sync.md.
        write = self.sync.update if self.sync.config.shared_fields else self.store.update
        try:
            session = await self._write(
                session_id,
                lambda: write(
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
        if priority is not None and self.expiry.rules:
            # Rules match by priority (min/max_priority) and priority lengthens grace: the
            # rule is picked again, in the period the session is in.
            await self.expiry.arm(session, repick=True)
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

    async def count_sessions(self) -> int:
        """Number of live sessions in the namespace (a SCAN: an admin call, not a hot path)."""
        return await self.store.count()

    # -- state tracking (sessioncache.tracker) -------------------------------------------------

    async def track_event(
        self, session_id: str, event_type: EventType | str, **fields: Any
    ) -> str | None:
        """Append an event to the session's stream; its id, or None if a retry found it
        already applied. SessionNotFound if the session does not exist."""
        return await self._write(
            session_id, lambda: self.tracker.track_event(session_id, event_type, **fields)
        )

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

    async def shutdown(self) -> None:
        """Stop every component, close the connections, leave the EMBEDDED server (the last
        process out stops it with a save)."""
        if not self._closed:
            self._closed = True
            self._running = False
            await self.health.stop()
            if self.backup_scheduler is not None:
                await self.backup_scheduler.stop()
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
