"""Issue 15's acceptance code block, run as written (in a fresh directory, no server set up)."""

from __future__ import annotations

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
from sessioncache.server import SharedServer

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
