"""SessionSystem: the facade bot code talks to, and initialize_sessions() that builds it."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .backends import RedisSettings
from .batch import Batch
from .codec import DEFAULT_LIMITS, Limits
from .coherent import CoherentCache
from .context import ContextConfig, SessionContext
from .conversation import ConversationMethods
from .errors import AlreadyInitialized, SessionCacheError, ValidationError
from .events import Event, EventType
from .models import Platform, Session, SessionState
from .nearcache import NearCacheConfig
from .patterns import PatternReport
from .persistence import BackupInfo, Persistence, RestoreReport, VerifyReport
from .persistence.restore import Decide
from .persistence.scheduler import BackupScheduler
from .prediction import LifecyclePrediction
from .redaction import redact_url
from .statistics import StatisticsReport
from .store import DEFAULT_TTL, SessionStore
from .tracker import StateTracker, TrackerConfig
from .turns import Turns

STORAGE_TYPES = ("MEMORY", "REDIS", "CLUSTER")


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
    # Context, near cache and turns (docs/context.md)
    context: ContextConfig = field(default_factory=ContextConfig)
    near_cache: bool | NearCacheConfig = False
    """True (or a NearCacheConfig) to serve session and context reads from process memory."""
    turn_lease: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.tracker, TrackerConfig):
            raise ValidationError(
                f"tracker options must be a TrackerConfig, not {type(self.tracker).__name__}"
            )
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
        """The config from keyword options; ValidationError names any unknown one."""
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
    """One object for bot code: the core store plus the features built on it.

    Not-found contract, the same on every surface (SessionStore, SessionSystem and the
    module-level functions): reads return None for a missing session (get_session,
    SessionStore.find/find_by_id; SessionStore.get is the one read that raises
    SessionNotFound); writes raise SessionNotFound (update, touch, transition, track_event);
    delete returns False; listings return what exists.
    """

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
        """Validate the options, connect, load the scripts and start the tracker (and the
        backup scheduler if configured). Not registered for the module-level functions."""
        config = SessionSystemConfig.from_options(**options)
        url, connection = storage_url(storage_type, storage_config)
        store = await SessionStore.connect(
            url,
            namespace=config.namespace,
            default_ttl=config.default_ttl,
            limits=config.limits,
            extras=[config.tracker.store_extras()],
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
        return system

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
        return await self.store.create(
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
        (one atomic step: racing callers end with one session)."""
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
        always asks Redis.
        """
        if self.near_cache is not None and not fresh:
            return await self.near_cache.get_session(session_id)
        return await self.store.find_by_id(session_id)

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
        delete_metadata: Iterable[str] = (),
        priority: int | None = None,
        expected_version: int | None = None,
    ) -> Session:
        """Merge data and metadata fields (and delete some) in one atomic step; see
        SessionStore.update(). SessionNotFound if the session does not exist."""
        try:
            return await self.store.update(
                session_id,
                data,
                metadata,
                delete=delete,
                delete_metadata=delete_metadata,
                priority=priority,
                expected_version=expected_version,
            )
        finally:
            self._written(session_id)

    async def delete_session(self, session_id: str) -> bool:
        """Remove a session and its context; True if the session existed, False if it did
        not (never raises for that)."""
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
        """Record activity (and messages), refresh the TTL; returns the new expiry.
        SessionNotFound if the session does not exist."""
        try:
            return await self.store.touch(session_id, messages=messages, ttl=ttl)
        finally:
            self._written(session_id)

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
        return await self.tracker.track_event(session_id, event_type, **fields)

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
        return await self.persistence.create_backup(
            description, format, incremental, events=events
        )

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
        """Stop the scheduler and close the connections (idempotent)."""
        if not self._closed:
            self._closed = True
            if self.backup_scheduler is not None:
                self.backup_scheduler.shutdown()
            await self.context.wait_summaries()
            if self.near_cache is not None:
                await self.near_cache.stop()
            await self.store.close()

    @property
    def closed(self) -> bool:
        """Whether shutdown() ran."""
        return self._closed

    async def __aenter__(self) -> SessionSystem:
        return self

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
    storage_type: str = "MEMORY",
    storage_config: Mapping[str, Any] | None = None,
    enable_all_features: bool = False,
    *,
    replace: bool = False,
    **options: Any,
) -> SessionSystem:
    """Build the session system and make it the one the module-level functions use.

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
    system = await SessionSystem.start(
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
