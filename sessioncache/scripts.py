"""The Lua script registry: lua/lib/*.lua prepended to each lua/*.lua, run by EVALSHA."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError, RedisError, ResponseError

from .errors import BackendUnavailable, ScriptError

_HEADER_RE = re.compile(r"^-- (lib/)?(\w+)\.lua: ")
_LINE_RE = re.compile(r"user_script:(\d+)")


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
    """One Lua script: its name, the source sent to Redis (helpers + body) and its SHA1.

    ``offset`` is the number of helper lines in front of the body, so a Lua error's
    ``user_script:N`` can be reported as ``name.lua:N - offset``.
    """

    name: str
    source: str
    sha: str
    offset: int = 0
    sha_arg: bytes = field(init=False, repr=False, compare=False)
    """The SHA1 as EVALSHA sends it (bytes: stock redis-py's packer encodes every str)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha_arg", self.sha.encode())

    async def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA, loading the script again if the server lost it; Redis errors as raised."""
        try:
            return await client.evalsha(self.sha_arg, len(keys), *keys, *args)
        except NoScriptError:
            # The server lost its script cache (restart, SCRIPT FLUSH, failover to a replica
            # that never saw SCRIPT LOAD): load it again (on every primary in a cluster).
            await client.script_load(self.source)
            return await client.evalsha(self.sha_arg, len(keys), *keys, *args)

    async def run(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Like calling the script, with Redis errors raised as ours: ScriptError for an error
        the script raised (a bug), BackendUnavailable for an outage or a refusing server."""
        try:
            try:
                return await client.evalsha(self.sha_arg, len(keys), *keys, *args)
            except NoScriptError:
                await client.script_load(self.source)
                return await client.evalsha(self.sha_arg, len(keys), *keys, *args)
        except ResponseError as exc:
            if str(exc).startswith(_SERVER_STATE_ERRORS):
                raise BackendUnavailable(f"Redis refused {self.name}: {exc}") from exc
            raise ScriptError(self.name, self.explain(exc)) from exc
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during {self.name}: {exc}") from exc

    def explain(self, exc: BaseException) -> str:
        """A Lua error message with line numbers of the .lua file, not of the combined source."""

        def line(match: re.Match[str]) -> str:
            n = int(match.group(1))
            if n > self.offset:
                return f"{self.name}.lua:{n - self.offset}"
            return f"lib:{n}"

        return _LINE_RE.sub(line, str(exc))


def _read(entry: Traversable, name: str, lib: bool) -> str:
    source = entry.read_text(encoding="utf-8")
    match = _HEADER_RE.match(source)
    if not match or match.group(2) != name or bool(match.group(1)) != lib:
        where = f"lib/{name}" if lib else name
        raise RuntimeError(f"lua/{where}.lua must open with '-- {where}.lua: <summary>'")
    return source if source.endswith("\n") else source + "\n"


_DEFINES_RE = re.compile(r"^local (?:function )?(\w+)", re.M)


def _lib_files() -> list[tuple[str, frozenset[str]]]:
    """Each lua/lib/*.lua in name order: its source and the names it defines."""
    lib = lua_dir().joinpath("lib")
    if not lib.is_dir():
        return []
    files = []
    for entry in sorted(lib.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".lua"):
            source = _read(entry, entry.name[: -len(".lua")], lib=True)
            files.append((source, frozenset(_DEFINES_RE.findall(source))))
    return files


def prelude(body: str | None = None) -> str:
    """The shared helpers: lua/lib/*.lua in name order, each defining ``local function``s.

    Sent in front of a script, so each rule exists once in the repository while every script
    stays one self-contained EVALSHA (see docs/architecture.md, "Lua"). With ``body``, only the
    lib files whose names the body uses (or a file it needs uses): fewer closures per call.
    """
    files = _lib_files()
    if body is None:
        return "".join(source for source, _ in files)
    words = set(re.findall(r"\w+", body))
    needed: set[int] = set()
    grew = True
    while grew:
        grew = False
        for i, (source, defines) in enumerate(files):
            if i not in needed and defines & words:
                needed.add(i)
                words |= set(re.findall(r"\w+", source))
                grew = True
    return "".join(source for i, (source, _) in enumerate(files) if i in needed)


def compose(name: str, body: str, helpers: str | None = None) -> Script:
    """A Script from a body and the helpers in front of it (tests compose probes this way)."""
    helpers = prelude(body) if helpers is None else helpers
    source = helpers + body
    sha = hashlib.sha1(source.encode("utf-8")).hexdigest()
    return Script(name, source, sha, helpers.count("\n"))


def load_scripts() -> dict[str, Script]:
    """Read every lua/*.lua; each must open with its ``-- name.lua: ...`` header."""
    scripts: dict[str, Script] = {}
    for entry in sorted(lua_dir().iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".lua"):
            continue
        name = entry.name[: -len(".lua")]
        scripts[name] = compose(name, _read(entry, name, lib=False))
    return scripts


class ScriptRegistry:
    """Every script as a typed attribute (``registry.update``), loaded into a server at start.

    Adding lua/NAME.lua means adding ``NAME: Script`` here: the constructor refuses a script
    file without an attribute, and an attribute without a file.
    """

    archive_restore: Script
    change_trim: Script
    context_append: Script
    context_clear: Script
    context_read: Script
    context_summarize: Script
    context_write: Script
    create: Script
    delete: Script
    expiry_act: Script
    expiry_arm: Script
    expiry_outbox: Script
    fleet_claim: Script
    fleet_finish: Script
    link_confirm: Script
    link_remove: Script
    link_start: Script
    lock_extend: Script
    lock_release: Script
    prune_index: Script
    read_many: Script
    ptb_migrate: Script
    publish_table: Script
    record_merge: Script
    record_replace: Script
    restore_events: Script
    restore_session: Script
    seen_update: Script
    sync_apply: Script
    sync_done: Script
    sync_pending_done: Script
    sync_plan: Script
    sync_read: Script
    sync_resolve: Script
    touch: Script
    track_event: Script
    transition: Script
    turn_enter: Script
    turn_leave: Script
    update: Script

    def __init__(self, scripts: dict[str, Script] | None = None) -> None:
        self.scripts = all_scripts() if scripts is None else scripts
        declared = {n for n in ScriptRegistry.__annotations__ if n != "scripts"}
        if declared != set(self.scripts):
            raise RuntimeError(
                "lua/*.lua and ScriptRegistry's attributes differ: "
                f"files only {sorted(set(self.scripts) - declared)}, "
                f"attributes only {sorted(declared - set(self.scripts))}"
            )
        for name, script in self.scripts.items():
            setattr(self, name, script)

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


_SCRIPTS: dict[str, Script] | None = None
_REGISTRY: ScriptRegistry | None = None


def all_scripts() -> dict[str, Script]:
    """The scripts, read from disk once per process."""
    global _SCRIPTS
    if _SCRIPTS is None:
        _SCRIPTS = load_scripts()
    return _SCRIPTS


def registry() -> ScriptRegistry:
    """The process's registry (scripts are immutable: one instance serves every client)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = ScriptRegistry()
    return _REGISTRY
