"""The command line: every command against a real server (EMBEDDED or redis://), and the demo."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessioncache import EventType, Platform
from sessioncache.cli import main
from sessioncache.embedded import EmbeddedRedis, free_port
from sessioncache.fleet import FleetJob, FleetRun
from sessioncache.server import SharedServer
from sessioncache.storage import storage_from_url
from sessioncache.system import SessionSystem

from .support.namespaces import drop_namespace, unique_namespace
from .support.servers import server_pids

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[str]:
    """An embedded:// URL on a fresh data directory; no server may outlive the test."""
    yield f"embedded://{tmp_path / 'data'}"
    assert server_pids(str(tmp_path)) == []


async def _seed(url: str) -> str:
    system = await SessionSystem.open(*storage_from_url(url), health_interval=None)
    try:
        s = await system.create_session("chat_1", "user_1", Platform.TELEGRAM, data={"k": 1})
        await system.create_session("chat_2", "user_1", Platform.DISCORD)
        await system.track_event(s.session_id, EventType.MESSAGE_RECEIVED, text="hi")
        return s.session_id
    finally:
        await system.shutdown()


def test_scripts_check_load_list(capsys: pytest.CaptureFixture[str]) -> None:
    with EmbeddedRedis() as server:
        assert main(["scripts", "check", "--url", server.url]) == 1
        assert "MISSING create" in capsys.readouterr().out.replace("  ", " ").replace("  ", " ")
        assert main(["scripts", "load", "--url", server.url]) == 0
        assert "loaded" in capsys.readouterr().out
        assert main(["scripts", "check", "--url", server.url]) == 0
        assert "MISSING" not in capsys.readouterr().out
    assert main(["scripts", "list"]) == 0
    listed = capsys.readouterr().out
    assert "update" in listed and "create" in listed
    assert main(["scripts", "list", "--json"]) == 0
    assert {"create", "update"} <= set(json.loads(capsys.readouterr().out))


def test_health_exits_non_zero_when_redis_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    assert main(["health", "--url", url]) == 1
    assert "status: down" in capsys.readouterr().out
    assert main(["health", "--url", url, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is False and "cannot use Redis" in report["error"]


def test_health_on_a_live_server(embedded: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "--url", embedded, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "ok"
    assert {"server", "redis", "scripts"} <= set(report["components"])
    assert main(["health", "--url", embedded]) == 0
    assert "status: ok" in capsys.readouterr().out


@pytest.fixture(params=["redis", "embedded"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A real Redis (private namespace) or an EMBEDDED data directory."""
    if request.param == "redis":
        yield request.getfixturevalue("redis_url")
    else:
        yield f"embedded://{tmp_path / 'data'}"
        assert server_pids(str(tmp_path)) == []


async def _run_fleet_job(url: str, namespace: str, name: str, fail: bool = False) -> None:
    """One run of fleet job ``name`` in this process (as a worker's scheduler would); with no
    name, the namespace is dropped."""

    async def body(run: FleetRun) -> None:
        if fail:
            raise RuntimeError("disk full")

    system = await SessionSystem.open(
        *storage_from_url(url), namespace=namespace, health_interval=None
    )
    try:
        if name:
            await FleetJob(system.store.client, system.store.keys, name, 3600, body).run_once()
        else:
            await drop_namespace(system.store.client, namespace)
    finally:
        await system.shutdown()


def test_health_reports_the_fleets_jobs_and_exits_2_when_one_failed(
    any_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = unique_namespace()
    health = ["health", "--url", any_url, "--namespace", ns]
    assert main([*health, "--json"]) == 0
    assert not [c for c in json.loads(capsys.readouterr().out)["components"] if "job:" in c]
    asyncio.run(_run_fleet_job(any_url, ns, "backup"))
    assert main([*health, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    backup = report["components"]["job:backup"]
    assert report["status"] == "ok" and backup["ok"] is True
    assert backup["holder"] == f"{socket.gethostname()}:{os.getpid()}"
    assert (backup["runs"], backup["running"], backup["last_status"]) == (1, False, "ok")
    assert isinstance(backup["last_run_at_ms"], int) and backup["interval_s"] == 3600.0
    assert main(health) == 0
    table = capsys.readouterr().out
    assert "job:backup" in table and f"holder={socket.gethostname()}:{os.getpid()}" in table
    assert "last_run=20" in table and "last_status=ok" in table
    # A job whose last run failed: sessions are still served, the fleet is degraded: exit 2.
    asyncio.run(_run_fleet_job(any_url, ns, "expiry", fail=True))
    assert main([*health, "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert (report["status"], report["healthy"], report["failed"]) == (
        "degraded", True, ["job:expiry"]
    )
    assert report["components"]["job:expiry"]["error"] == (
        "the last expiry run ended with error:RuntimeError"
    )
    assert main(health) == 2
    assert re.search(r"job:expiry +FAILED", capsys.readouterr().out)
    asyncio.run(_run_fleet_job(any_url, ns, ""))


def test_sessions_events_stats(embedded: str, capsys: pytest.CaptureFixture[str]) -> None:
    sid = asyncio.run(_seed(embedded))
    assert main(["sessions", "list", "--url", embedded, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(s["session_id"] for s in listed) == [
        "discord:chat_2:user_1",
        "telegram:chat_1:user_1",
    ]
    assert main(["sessions", "list", "--url", embedded, "--user", "user_1"]) == 0
    assert "telegram:chat_1:user_1" in capsys.readouterr().out
    assert main(["sessions", "show", sid, "--url", embedded, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"] == {"k": 1}
    assert main(["events", sid, "--url", embedded, "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert [e["type"] for e in events][-1] == "message_received"
    assert main(["stats", "--url", embedded, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    assert main(["sessions", "delete", sid, "--url", embedded]) == 0
    assert f"deleted  {sid}" in capsys.readouterr().out
    assert main(["sessions", "delete", sid, "--url", embedded]) == 1


def test_errors_are_one_line_without_traceback(embedded: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sessioncache", "sessions", "show", "telegram:no:one", "--url",
         embedded],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "sessioncache sessions: error: session 'telegram:no:one' does not exist (never created, "
        "deleted or expired)"
    ]
    assert "Traceback" not in done.stdout + done.stderr


def test_server_start_status_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "srv")
    assert main(["server", "status", "--data-dir", data]) == 1
    assert "running      False" in capsys.readouterr().out
    assert main(["server", "start", "--data-dir", data, "--json"]) == 0
    started = json.loads(capsys.readouterr().out)
    assert started["running"] is True and started["pinned"] is True
    # A process that joins and leaves does not stop a started (pinned) server.
    assert main(["health", "--url", f"embedded://{data}"]) == 0
    assert SharedServer(data).running_pid() == started["pid"]
    assert main(["server", "stop", "--data-dir", data]) == 0
    assert SharedServer(data).running_pid() is None
    assert main(["server", "stop", "--data-dir", data]) == 1
    assert server_pids(str(tmp_path)) == []


def test_demo_runs_to_its_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--workers", "3", "--users", "30", "--messages", "4"]) == 0
    out = capsys.readouterr().out
    assert "3 worker processes, 30 users, 4 messages each, on EMBEDDED" in out
    assert "ok   turns counted (no lost update): 120" in out
    assert "FAIL" not in out and "result: nothing lost" in out
    assert "ok   near-cache reads equal to a fresh read: 150" in out
    assert "ok   expiry warnings sent (one per session): 30" in out
    assert "ok   idle sessions archived exactly once: 15" in out
    assert "ok   archived sessions warned before: 15" in out
    assert "features shown: " in out and "near-cache reads, expiry with a warning" in out
    # Users 5, 15 and 25 link a second platform: codes made by one worker, confirmed by another.
    assert "ok   identities linked by a one-time code: 3" in out
    assert "ok   persons with two linked identities: 3" in out
    assert "ok   codes confirmed by another worker process: 3" in out
    assert "ok   second-platform sessions that arrived with the shared profile: 3" in out
    assert "ok   changes on the second platform that reached the first: 3" in out
    assert "ok   sessions after restore: 33" in out


def test_demo_on_a_real_redis_as_json(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--url", redis_url, "--workers", "2", "--users", "20", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["ok"] is True and report["messages"] == 100
    assert all(c["expected"] == c["actual"] for c in report["checks"])
    checks = {c["check"]: c["actual"] for c in report["checks"]}
    assert checks["reads after another process's write equal to a fresh read"] == 2
    assert checks["sessions that kept talking still live"] == 10
    # 5 rounds over 20 sessions: the first round misses; a hit never needs Redis.
    hits, misses = report["near_cache_hits"], report["near_cache_misses"]
    assert hits > 0 and misses >= 20 and hits + misses <= 100
    assert "turn lock" in report["features"] and "expiry with a warning" in report["features"]
    assert checks["persons with two linked identities"] == 2
    assert checks["changes on the second platform that reached the first"] == 2
    assert "a cross-channel link" in report["features"]
    assert "demo: step 3/6 near_cache_reads" in captured.err
    assert "demo: 6 steps done" in captured.err


@pytest.mark.cluster
def test_demo_on_a_cluster(cluster_url: str) -> None:
    """README: `--url redis+cluster://...` runs the demo on a cluster. In a process of its own,
    as people run it: there its expiry step once read the kept sessions only after
    get_statistics() (1.4s on a cluster), past their own 1.5s deadlines."""
    done = subprocess.run(
        [sys.executable, "-m", "sessioncache", "demo", "--url", cluster_url, "--workers", "2",
         "--users", "40", "--messages", "2", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=55,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    checks = {c["check"]: c["actual"] for c in report["checks"]}
    assert checks["sessions that kept talking still live"] == 20
    assert checks["expiry warnings sent (one per session)"] == 40
    assert checks["changes on the second platform that reached the first"] == 4


def test_readme_first_command_runs_in_a_subprocess(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sessioncache", "demo"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "result: nothing lost" in done.stdout and "Traceback" not in done.stderr
    # The README shows this report: the same steps, features and exact counts.
    readme = (ROOT / "README.md").read_text()
    shown = readme[readme.index("```\nsessioncache demo: ") : readme.index("result: nothing lost")]

    def stable(text: str) -> list[str]:
        # Figures (times, rates, paths, ids) vary per run; the check lines and the kind of
        # each report line do not.
        lines = text.splitlines()
        kinds = [line.split()[0] for line in lines if line.startswith("  ") and line.strip()]
        return kinds + [line for line in lines if line.startswith(("  ok", "features shown"))]

    assert stable(shown) == stable(done.stdout[: done.stdout.index("result: nothing lost")])
