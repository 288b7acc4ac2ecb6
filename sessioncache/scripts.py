"""The Lua script registry: loads lua/*.lua once and runs them by EVALSHA, reloading on NOSCRIPT."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError, RedisError, ResponseError

from .errors import BackendUnavailable, ScriptError

_HEADER_RE = re.compile(r"^-- (\w+)\.lua: ")


def lua_dir() -> Traversable:
    """Where the scripts are: inside the installed wheel, or the repo's top-level lua/."""
    packaged = resources.files("sessioncache").joinpath("lua")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "lua"


# Error replies that describe the server's state, not the script: retrying later can succeed.
_SERVER_STATE_ERRORS = (
    "OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "MISCONF",
    "NOREPLICAS", "NOSCRIPT",
)


@dataclass(frozen=True, slots=True)
class Script:
    """One Lua script: its name, source and SHA1."""

    name: str
    source: str
    sha: str

    async def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # The server lost its script cache (restart, SCRIPT FLUSH, failover to a replica
            # that never saw SCRIPT LOAD): load it again (on every primary in a cluster).
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    async def run(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Like calling the script, with Redis errors raised as ours: ScriptError for an error
        the script raised (a bug), BackendUnavailable for an outage or a refusing server."""
        try:
            try:
                return await client.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                await client.script_load(self.source)
                return await client.evalsha(self.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if str(exc).startswith(_SERVER_STATE_ERRORS):
                raise BackendUnavailable(f"Redis refused {self.name}: {exc}") from exc
            raise ScriptError(self.name, str(exc)) from exc
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during {self.name}: {exc}") from exc


def load_scripts() -> dict[str, Script]:
    """Read every lua/*.lua; each must open with its ``-- name.lua: ...`` header."""
    scripts: dict[str, Script] = {}
    for entry in sorted(lua_dir().iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".lua"):
            continue
        source = entry.read_text(encoding="utf-8")
        name = entry.name[: -len(".lua")]
        match = _HEADER_RE.match(source)
        if not match or match.group(1) != name:
            raise RuntimeError(f"lua/{entry.name} must open with '-- {name}.lua: <summary>'")
        sha = hashlib.sha1(source.encode("utf-8")).hexdigest()
        scripts[name] = Script(name, source, sha)
    return scripts


_SCRIPTS: dict[str, Script] | None = None


def all_scripts() -> dict[str, Script]:
    """The scripts, read from disk once per process."""
    global _SCRIPTS
    if _SCRIPTS is None:
        _SCRIPTS = load_scripts()
    return _SCRIPTS


class ScriptRegistry:
    """The scripts as attributes, loaded into a client's server(s) at start-up."""

    def __init__(self) -> None:
        self.scripts = all_scripts()
        self.create = self.scripts["create"]
        self.update = self.scripts["update"]
        self.touch = self.scripts["touch"]
        self.delete = self.scripts["delete"]
        self.prune_index = self.scripts["prune_index"]

    def __getitem__(self, name: str) -> Script:
        return self.scripts[name]

    async def load(self, client: Any) -> dict[str, str]:
        """SCRIPT LOAD every script (every primary in a cluster); returns name -> sha."""
        loaded = {}
        for script in self.scripts.values():
            sha = await client.script_load(script.source)
            if isinstance(sha, bytes):
                sha = sha.decode()
            if sha != script.sha:
                raise RuntimeError(
                    f"server returned sha {sha} for {script.name}, expected {script.sha}"
                )
            loaded[script.name] = sha
        return loaded

    async def missing(self, client: Any) -> list[str]:
        """Names of scripts the server (every primary, in a cluster) does not have cached."""
        shas = [s.sha for s in self.scripts.values()]
        present = await client.script_exists(*shas)
        return [s.name for s, ok in zip(self.scripts.values(), present, strict=True) if not ok]
