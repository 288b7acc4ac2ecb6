"""SessionSystemConfig: every option initialize_sessions() takes, checked when it is built."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .codec import DEFAULT_LIMITS, Limits
from .context import ContextConfig
from .errors import ValidationError
from .expiry.rules import load_rules_toml, parse_rules
from .nearcache import NearCacheConfig
from .scopes import check_scope
from .storage import redact
from .store import DEFAULT_TTL
from .sync import SyncConfig
from .tracker import TrackerConfig


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
    expiry_effect_lease: float = 30.0
    """Seconds an undelivered expiry effect (callback, archive file) stays with the process
    that recorded it before any sweep may deliver it (docs/expiry.md)."""
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
