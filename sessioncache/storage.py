"""Storage types (MEMORY, REDIS, CLUSTER, EMBEDDED/DATABASE): from a choice or URL to a backend."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .backends import RedisSettings
from .errors import ValidationError
from .redaction import is_secret_name, redact_url
from .server import SharedServer

log = logging.getLogger(__name__)

STORAGE_TYPES = ("MEMORY", "REDIS", "CLUSTER", "EMBEDDED", "DATABASE")
URL_ENV = "SESSIONCACHE_URL"
DATA_DIR_ENV = "SESSIONCACHE_DATA_DIR"
EMBEDDED_SCHEME = "embedded://"
_EMBEDDED_OPTIONS = ("data_dir", "db_path", "binary", "start_timeout")


def default_data_dir() -> Path:
    """$SESSIONCACHE_DATA_DIR, else $XDG_DATA_HOME/sessioncache, else ~/.local/share/sessioncache.

    The EMBEDDED server keeps its files here unless told otherwise, and enable_all_features
    puts its default ``backups/`` and ``archive/`` directories under it.
    """
    explicit = os.environ.get(DATA_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(base).expanduser() / "sessioncache"


def redact(value: Any, name: str = "") -> Any:
    """A copy of an option value that is safe to print: secrets masked, URL passwords hidden."""
    if name and is_secret_name(name) and value is not None and not isinstance(value, bool):
        return "***"
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


def storage_from_url(url: str) -> tuple[str, dict[str, Any]]:
    """The storage type and config a URL stands for (``embedded://DIR`` for EMBEDDED)."""
    if url.startswith(EMBEDDED_SCHEME):
        path = url[len(EMBEDDED_SCHEME) :]
        return "EMBEDDED", ({"data_dir": path} if path else {})
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return "MEMORY", {"url": url}
    if scheme.endswith("+cluster"):
        return "CLUSTER", {"url": url}
    return "REDIS", {"url": url}


@dataclass
class Storage:
    """A resolved storage choice: the URL to connect to, and the server to attach first."""

    kind: str
    url: str
    connection: dict[str, Any] = field(default_factory=dict)
    server: SharedServer | None = None
    data_dir: Path = field(default_factory=default_data_dir)

    def __repr__(self) -> str:
        return f"Storage({self.kind}, {redact_url(self.url)!r})"


def resolve_storage(storage_type: str | None, storage_config: Mapping[str, Any] | None) -> Storage:
    """Validate an origin-style storage choice; nothing is started or connected yet.

    No ``storage_type``: the type a ``url``/``db_path``/``data_dir`` in ``storage_config``
    implies, else $SESSIONCACHE_URL, else MEMORY.
    """
    config = dict(storage_config or {})
    env_url = os.environ.get(URL_ENV)
    if storage_type is None:
        if "url" in config:
            storage_type = storage_from_url(str(config["url"]))[0]
        elif "db_path" in config or "data_dir" in config:
            storage_type = "EMBEDDED"
        elif env_url:
            storage_type, from_env = storage_from_url(env_url)
            config = {**from_env, **config}
        else:
            storage_type = "MEMORY"
    kind = str(storage_type).upper()
    if kind not in STORAGE_TYPES:
        raise ValidationError(
            f"storage_type must be one of {', '.join(STORAGE_TYPES)}; got {storage_type!r}"
        )
    if kind in ("EMBEDDED", "DATABASE"):
        return _embedded(config)
    if kind == "MEMORY":
        name = config.pop("name", "default")
        url = config.pop("url", f"memory://{name}")
        if not str(url).startswith("memory://"):
            raise ValidationError(
                f"storage_type MEMORY takes a memory:// url, got {redact_url(url)!r}"
            )
    else:
        url = config.pop("url", None)
        implied = bool(env_url) and storage_from_url(str(env_url))[0] == kind
        if not url and "host" not in config and "port" not in config and implied:
            url = env_url
        if not url:
            host, port = config.pop("host", "127.0.0.1"), config.pop("port", 6379)
            url = f"redis://{host}:{port}"
        scheme, rest = str(url).split("://", 1) if "://" in str(url) else ("", str(url))
        if kind == "CLUSTER" and "+cluster" not in scheme:
            url = f"{scheme}+cluster://{rest}"
        if kind == "REDIS" and "+cluster" in scheme:
            raise ValidationError("storage_type REDIS got a cluster URL; use storage_type CLUSTER")
    RedisSettings.from_options(str(url), **config)  # validates the options before connecting
    return Storage(kind, str(url), config)


def _embedded(config: dict[str, Any]) -> Storage:
    options = {k: config.pop(k) for k in _EMBEDDED_OPTIONS if k in config}
    if "url" in config:
        raise ValidationError(
            "storage_type EMBEDDED runs its own server: give data_dir= or db_path=, not url="
        )
    server_options = {k: options[k] for k in ("binary", "start_timeout") if k in options}
    if "db_path" in options and "data_dir" in options:
        raise ValidationError("give either db_path= or data_dir= for EMBEDDED storage, not both")
    if "db_path" in options:
        server = SharedServer.for_db_path(options["db_path"], **server_options)
    else:
        server = SharedServer(options.get("data_dir") or default_data_dir(), **server_options)
    RedisSettings.from_options(server.url, **config)
    return Storage("EMBEDDED", server.url, config, server, server.data_dir)
