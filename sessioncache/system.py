"""SessionSystem: the facade bot code talks to, and initialize_sessions() that builds it."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .backends import RedisSettings
from .batch import Batch
from .codec import DEFAULT_LIMITS, Limits
from .coherent import CoherentCache
from .context import ContextConfig, SessionContext
from .conversation import ConversationMethods
from .errors import SessionCacheError, SessionExpired, SessionNotFound, ValidationError
from .events import Event, EventType
from .expiry import ArchivedSession, ExpiryEngine, ExpiryInfo, ExpiryReport
from .expiry.rules import Rule, load_rules_toml, parse_rules
from .models import Platform, Session, SessionState
from .nearcache import NearCacheConfig
from .patterns import LifecyclePrediction, PatternReport
from .persistence import BackupInfo, Persistence, RestoreReport, VerifyReport
from .persistence.restore import Decide
from .persistence.scheduler import BackupScheduler
from .redaction import redact_url
from .statistics import StatisticsReport
from .store import DEFAULT_TTL, SessionStore
from .tracker import StateTracker, TrackerConfig
from .turns import Turns

STORAGE_TYPES = ("MEMORY", "REDIS", "CLUSTER")
T = TypeVar("T")


@dataclass(slots=True)
class SessionSystemConfig:
    """Everything initialize_sessions() accepts besides the storage choice.

    State tracking is always on and persistence works as soon as ``backup_dir`` is set;
    ``enable_all_features=True`` (the origin API's switch) asks for every feature to be usable
    and so refuses to start without a ``backup_dir``, rather than failing at the first backup.
    """

    namespace: str = "sc"
    default_ttl: float = DEFAULT_TTL
    limits: Limits = field(default_factory=lambda: DEFAULT_LIMITS)
    enable_all_features: bool = False
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    # Persistence (docs/persistence.md)
    backup_dir: str | None = None
    archive_dir: str | None = None
    snapshot_dir: str | None = None
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
    # Expiry (docs/expiry.md)
    expiry_rules: Any = None
    """Ordered rules: a list of rule dicts, or the path of a TOML file of ``[[rule]]`` tables."""
    expiry_interval: float = 60.0
    """Seconds between sweeps (once per interval across the fleet)."""
    expiry_archive_retention: float = 30 * 86400.0
    """How long archived sessions stay in Redis (archive_dir keeps a file copy)."""
    expiry_notify: Any = None
    """Called with an ExpiryNotice for each warning and notify action (sync or async)."""
    # Context, near cache and turns (docs/context.md)
    context: ContextConfig = field(default_factory=ContextConfig)
    near_cache: bool | NearCacheConfig = False
    """True (or a NearCacheConfig) to serve session and context reads from process memory."""
    turn_lease: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.expiry_rules, (str, Path)):
            self.expiry_rules = load_rules_toml(self.expiry_rules)
        else:
            self.expiry_rules = parse_rules(self.expiry_rules)
        if self.expiry_notify is not None and not callable(self.expiry_notify):
            raise ValidationError("expiry_notify must be a callable given an ExpiryNotice")
        if not isinstance(self.enable_all_features, bool):
            raise ValidationError(
                f"enable_all_features must be a bool, got {self.enable_all_features!r}"
            )
        if self.enable_all_features and self.backup_dir is None:
            raise ValidationError(
                "enable_all_features=True needs backup_dir= (where backups go); "
                "pass backup_dir, or leave enable_all_features off to run without persistence"
            )

    @classmethod
    def from_options(cls, **options: Any) -> SessionSystemConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValidationError(
                f"unknown option(s) {', '.join(unknown)} for initialize_sessions(); "
                f"known: storage_type, storage_config, {', '.join(sorted(known))}"
            )
        return cls(**options)


def storage_url(
    storage_type: str, storage_config: Mapping[str, Any] | None
) -> tuple[str, dict[str, Any]]:
    """The backend URL and connection options for an origin-style storage choice."""
    config = dict(storage_config or {})
    kind = str(storage_type).upper()
    if kind not in STORAGE_TYPES:
        raise ValidationError(
            f"storage_type must be one of {', '.join(STORAGE_TYPES)}; got {storage_type!r}"
        )
    if kind == "MEMORY":
        name = config.pop("name", "default")
        url = config.pop("url", f"memory://{name}")
        if not url.startswith("memory://"):
            raise ValidationError(
                f"storage_type MEMORY takes a memory:// url, got {redact_url(url)!r}"
            )
    else:
        url = config.pop("url", None)
        if not url:
            host, port = config.pop("host", "127.0.0.1"), config.pop("port", 6379)
            url = f"redis://{host}:{port}"
        if kind == "CLUSTER" and "+cluster" not in url.split("://", 1)[0]:
            scheme, rest = url.split("://", 1)
            url = f"{scheme}+cluster://{rest}"
        if kind == "REDIS" and "+cluster" in url.split("://", 1)[0]:
            raise ValidationError("storage_type REDIS got a cluster URL; use storage_type CLUSTER")
    RedisSettings.from_options(url, **config)  # validates the options before connecting
    return url, config


class SessionSystem(ConversationMethods):
    """One object for bot code: the core store plus the features built on it."""

    def __init__(self, store: SessionStore, config: SessionSystemConfig) -> None:
        self.store = store
        self.config = config
        self._started = time.monotonic()
        self._closed = False
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
        self.near_cache: CoherentCache | None = None
        self.context = SessionContext(store, config.context)
        self.turns = Turns(store, lease=config.turn_lease)
        self.batch = Batch(store)
        self.backup_scheduler: BackupScheduler | None = None
        if config.backup_interval or config.snapshot_interval:
            self.backup_scheduler = BackupScheduler(
                self.persistence,
                backup_interval=config.backup_interval,
                full_every=config.backup_full_every,
                snapshot_interval=config.snapshot_interval,
            )

    @classmethod
    async def start(
        cls,
        storage_type: str = "MEMORY",
        storage_config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> SessionSystem:
        config = SessionSystemConfig.from_options(**options)
        url, connection = storage_url(storage_type, storage_config)
        store = await SessionStore.connect(
            url,
            namespace=config.namespace,
            default_ttl=config.default_ttl,
            limits=config.limits,
            **connection,
        )
        try:
            system = cls(store, config)
            await system.tracker.start()
            if config.near_cache:
                await system.enable_near_cache(url, config.near_cache)
        except BaseException:
            await store.close()
            raise
        if system.backup_scheduler is not None:
            system.backup_scheduler.start()
        if system.expiry_scheduler is not None:
            system.expiry_scheduler.start()
        return system

    # -- sessions -------------------------------------------------------------------------

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
        session = await self.store.create(
            platform,
            chat_id,
            user_id,
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
        if self.expiry.rules:
            return await self.expiry.get_or_create(
                self.store.identity(platform, chat_id, user_id, thread_id),
                data=data,
                metadata=metadata,
                state=state,
                priority=priority,
                ttl=ttl,
            )
        return await self.store.get_or_create(
            platform,
            chat_id,
            user_id,
            thread_id,
            data=data,
            metadata=metadata,
            state=state,
            priority=priority,
            ttl=ttl,
        )

    async def get_session(self, session_id: str, *, fresh: bool = False) -> Session | None:
        """The session, or None if it does not exist (the origin API's contract).

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

    async def update_session(
        self,
        session_id: str,
        data: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        delete: Iterable[str] = (),
        priority: int | None = None,
        expected_version: int | None = None,
    ) -> Session:
        try:
            return await self._write(
                session_id,
                lambda: self.store.update(
                    session_id,
                    data=data,
                    metadata=metadata,
                    delete=delete,
                    priority=priority,
                    expected_version=expected_version,
                ),
            )
        finally:
            self._written(session_id)

    async def delete_session(self, session_id: str) -> bool:
        """Remove a session and its context; True if the session existed."""
        existed = await self.store.delete(session_id)
        await self.context.delete_context(session_id)
        self._written(session_id)
        return existed

    def _written(self, session_id: str) -> None:
        if self.near_cache is not None:
            self.near_cache.written_session(session_id)

    async def touch_session(
        self, session_id: str, *, messages: int = 0, ttl: float | None = None
    ) -> dt.datetime:
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
        return await self.store.list_user_sessions(user_id)

    async def count_sessions(self) -> int:
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
        return await self.tracker.transition(
            session_id, to_state, expected_version=expected_version, reason=reason
        )

    async def track_event(
        self, session_id: str, event_type: EventType | str, **fields: Any
    ) -> str | None:
        return await self._write(
            session_id, lambda: self.tracker.track_event(session_id, event_type, **fields)
        )

    async def get_events(self, session_id: str, **query: Any) -> list[Event]:
        return await self.tracker.get_events(session_id, **query)

    async def get_statistics(self, **options: Any) -> StatisticsReport:
        return await self.tracker.get_statistics(**options)

    async def analyze_patterns(self, **options: Any) -> PatternReport:
        return await self.tracker.analyze_patterns(**options)

    async def predict_lifecycle(self, session_id: str, **options: Any) -> LifecyclePrediction:
        return await self.tracker.predict_lifecycle(session_id, **options)

    def get_performance_metrics(self) -> dict[str, dict[str, Any]]:
        metrics = self.tracker.get_performance_metrics()
        if self.near_cache is not None:
            metrics["near_cache"] = self.near_cache.summary()
        return metrics

    async def health_check(self) -> dict[str, Any]:
        """Whether the store can serve: Redis answers and holds every script, with timings.

        Scripts the server lost (a restart, a failover to a replica that never loaded them,
        SCRIPT FLUSH) are loaded again here, so a readiness probe reports healthy as soon as
        calls work; ``reloaded_scripts`` names what was reloaded."""
        began = time.perf_counter()
        scripts, client = self.store.scripts, self.store.client
        try:
            await client.ping()
            reloaded = await scripts.missing(client)
            if reloaded:
                await scripts.load(client)
            missing = await scripts.missing(client) if reloaded else []
        except Exception as exc:
            return {"healthy": False, "error": str(exc)}
        return {
            "healthy": not missing,
            "ping_ms": round((time.perf_counter() - began) * 1000, 3),
            "missing_scripts": missing,
            "reloaded_scripts": reloaded,
            "cluster": self.store.is_cluster,
            "namespace": self.store.keys.namespace,
            "uptime_s": round(time.monotonic() - self._started, 3),
        }

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
        return self.persistence.list_backups()

    async def verify_backup(self, backup_id: str, *, allow_pickle: bool = False) -> VerifyReport:
        return await self.persistence.verify_backup(backup_id, allow_pickle=allow_pickle)

    async def restore_backup(
        self,
        backup_id: str,
        strategy: str = "merge",
        *,
        decide: Decide | None = None,
        allow_pickle: bool = False,
    ) -> RestoreReport:
        return await self.persistence.restore_backup(
            backup_id, strategy, decide=decide, allow_pickle=allow_pickle
        )

    async def export_session(
        self, session_id: str, path: str | None = None, *, format: str = "json"
    ) -> bytes | Path:
        return await self.persistence.export_session(session_id, path, format=format)

    async def import_session(
        self,
        source: str | Path | bytes,
        strategy: str = "replace",
        *,
        decide: Decide | None = None,
        allow_pickle: bool = False,
    ) -> str:
        return await self.persistence.import_session(
            source, strategy, decide=decide, allow_pickle=allow_pickle
        )

    async def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            if self.backup_scheduler is not None:
                self.backup_scheduler.shutdown()
            if self.expiry_scheduler is not None and self.expiry_scheduler.running:
                self.expiry_scheduler.pause()
                await self.expiry.job.drain()
                self.expiry_scheduler.shutdown(wait=False)
            await self.context.wait_summaries()
            if self.near_cache is not None:
                await self.near_cache.stop()
            await self.store.close()

    async def __aenter__(self) -> SessionSystem:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()


# -- the origin document's module-level API ------------------------------------------------

_current: SessionSystem | None = None


async def initialize_sessions(
    storage_type: str = "MEMORY",
    storage_config: Mapping[str, Any] | None = None,
    enable_all_features: bool = False,
    **options: Any,
) -> SessionSystem:
    """Build the session system and make it the one the module-level functions use."""
    global _current
    system = await SessionSystem.start(
        storage_type, storage_config, enable_all_features=enable_all_features, **options
    )
    if _current is not None:
        await _current.shutdown()
    _current = system
    return system


def current_system() -> SessionSystem:
    if _current is None:
        raise SessionCacheError("call 'await initialize_sessions()' before using sessions")
    return _current


async def create_session(
    chat_id: str | int, user_id: str | int, platform: Platform | str = Platform.WEB, **kwargs: Any
) -> Session:
    return await current_system().create_session(chat_id, user_id, platform, **kwargs)


async def get_or_create_session(
    chat_id: str | int, user_id: str | int, platform: Platform | str = Platform.WEB, **kwargs: Any
) -> Session:
    return await current_system().get_or_create_session(chat_id, user_id, platform, **kwargs)


async def get_session(session_id: str) -> Session | None:
    return await current_system().get_session(session_id)


async def update_session(
    session_id: str, data: Mapping[str, Any] | None = None, **kwargs: Any
) -> Session:
    return await current_system().update_session(session_id, data, **kwargs)


async def delete_session(session_id: str) -> bool:
    return await current_system().delete_session(session_id)


async def touch_session(session_id: str, **kwargs: Any) -> dt.datetime:
    return await current_system().touch_session(session_id, **kwargs)


async def list_user_sessions(user_id: str | int) -> list[Session]:
    return await current_system().list_user_sessions(user_id)


async def shutdown_sessions() -> None:
    """Close the system made by initialize_sessions()."""
    global _current
    if _current is not None:
        system, _current = _current, None
        await system.shutdown()
