"""Backends chosen by URL: redis://, rediss://, unix://, redis+cluster://, memory://NAME."""

from __future__ import annotations

import functools
import os
import socket
import threading
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import ValidationError
from .leanclient import FAST_CONNECTIONS, LeanConnectionPool, LeanRedis, lean_supported
from .pool import DEFAULT_POOL_TIMEOUT, BoundedConnectionPool, BoundedRedisCluster
from .redaction import MASK, is_secret_name, redact_url

SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "memory")


def default_client_name() -> str:
    """A client name per process, shown by CLIENT LIST: sessioncache:<host>:<pid>."""
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    return f"sessioncache:{host[:40]}:{os.getpid()}"


@dataclass(frozen=True, slots=True, repr=False)
class RedisSettings:
    """How to reach Redis. Every timeout and retry setting is explicit rather than redis-py's.

    ``pool_timeout``: how long a call waits for a free connection when all
    ``max_connections`` are in use (docs/architecture.md, "Backends"), then BackendUnavailable.
    None (the default) means 10 s for a server, and no limit for memory://, where the only
    work ahead of a waiting call is this process's own.
    """

    url: str = "memory://default"
    socket_timeout: float = 5.0
    socket_connect_timeout: float = 2.0
    retries: int = 3
    backoff_base: float = 0.02
    backoff_cap: float = 1.0
    max_connections: int = 64
    pool_timeout: float | None = None
    health_check_interval: float = 30.0
    client_name: str | None = None
    protocol: int = 3
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme if isinstance(self.url, str) else ""
        if scheme not in SCHEMES:
            raise ValidationError(
                f"unsupported URL {redact_url(self.url)!r}: use one of "
                + ", ".join(f"{s}://" for s in SCHEMES)
            )
        if self.protocol not in (2, 3):
            raise ValidationError(f"protocol must be 2 or 3, got {self.protocol!r}")
        for name in (
            "socket_timeout",
            "socket_connect_timeout",
            "backoff_base",
            "backoff_cap",
            "pool_timeout",
        ):
            value = getattr(self, name)
            if name == "pool_timeout" and value is None:
                continue
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValidationError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValidationError(f"retries must be an int >= 0, got {self.retries!r}")
        if not isinstance(self.max_connections, int) or self.max_connections < 1:
            raise ValidationError(
                f"max_connections must be an int >= 1, got {self.max_connections!r}"
            )

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "url":
                value = redact_url(value)
            elif f.name == "extra":
                value = {k: MASK if is_secret_name(k) else v for k, v in value.items()}
            shown.append(f"{f.name}={value!r}")
        return f"RedisSettings({', '.join(shown)})"

    @property
    def pool_wait(self) -> float | None:
        """The pool_timeout in force: as set, else 10 s (None, no limit, for memory://)."""
        if self.pool_timeout is not None:
            return self.pool_timeout
        return None if self.scheme == "memory" else DEFAULT_POOL_TIMEOUT

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @classmethod
    def from_options(cls, url: str, **options: Any) -> RedisSettings:
        """Settings from a URL and keyword options; unknown options raise."""
        known = set(cls.__dataclass_fields__) - {"url"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValidationError(
                f"unknown connection option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(url=url, **options)

    def with_url(self, url: str) -> RedisSettings:
        return replace(self, url=url)


_MEMORY_SERVERS: dict[str, Any] = {}
_MEMORY_LOCK = threading.Lock()


def memory_server(name: str) -> Any:
    """The fakeredis server shared by every memory://NAME client of this process."""
    import fakeredis

    with _MEMORY_LOCK:
        server = _MEMORY_SERVERS.get(name)
        if server is None:
            server = fakeredis.FakeServer(version=(7, 0))
            _MEMORY_SERVERS[name] = server
        return server


def forget_memory_server(name: str) -> None:
    """Drop a named in-process server (its data goes with it)."""
    with _MEMORY_LOCK:
        _MEMORY_SERVERS.pop(name, None)


def connect(settings: RedisSettings, *, lean: bool | None = None) -> Any:
    """A redis.asyncio client (Redis, RedisCluster or fakeredis) for the settings.

    The standalone client is the lean one (leanclient.py) when ``lean`` is None and this
    redis-py is a version it was tested on, otherwise stock redis-py; both wait for a free
    connection up to ``pool_timeout``.
    """
    scheme = settings.scheme
    retry = Retry(
        ExponentialWithJitterBackoff(cap=settings.backoff_cap, base=settings.backoff_base),
        settings.retries,
        supported_errors=(RedisConnectionError, RedisTimeoutError),
    )
    common: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.socket_connect_timeout,
        "retry": retry,
        "client_name": settings.client_name or default_client_name(),
        "protocol": settings.protocol,
        "decode_responses": False,
        **settings.extra,
    }
    if scheme == "memory":
        import fakeredis

        parts = urlsplit(settings.url)
        name = (parts.netloc + parts.path).strip("/") or "default"
        return fakeredis.aioredis.FakeRedis(
            server=memory_server(name),
            protocol=settings.protocol,
            decode_responses=False,
            max_connections=settings.max_connections,
            connection_pool_class=functools.partial(  # type: ignore[arg-type]
                BoundedConnectionPool, pool_timeout=settings.pool_wait
            ),
        )
    if scheme.endswith("+cluster"):
        url = settings.url.replace("+cluster", "", 1)
        return BoundedRedisCluster.bounded(
            url,
            settings.pool_wait,
            max_connections=settings.max_connections,
            health_check_interval=settings.health_check_interval,
            **common,
        )
    if lean is None:
        lean = lean_supported()
    pool_class = LeanConnectionPool if lean else BoundedConnectionPool
    options = {"connection_class": FAST_CONNECTIONS[scheme]} if lean else {}
    pool = pool_class.from_url(
        settings.url,
        max_connections=settings.max_connections,
        pool_timeout=settings.pool_wait,
        health_check_interval=settings.health_check_interval,
        **options,
        **common,
    )
    # from_pool: the client owns the pool, and aclose() closes it.
    return (LeanRedis if lean else aioredis.Redis).from_pool(pool)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)
