"""Fleet jobs (fleet.py): once per interval across processes, takeover of a dead run."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sessioncache.errors import ValidationError
from sessioncache.fleet import FleetJob, FleetRun
from sessioncache.persistence import Persistence
from sessioncache.store import SessionStore

from .support.fleet_workers import backup_member, fleet_member
from .support.namespaces import drop_namespace, unique_namespace

KEY = "fleet-test-key-0123456789abcdef"
HOUR = 3600.0


def _job(store: SessionStore, func: Any, interval: float = HOUR, **kw: Any) -> FleetJob:
    return FleetJob(store.client, store.keys, "probe", interval, func, **kw)


async def _server_interval(store: SessionStore, interval: float) -> int:
    sec, usec = await store.client.time()
    return int((sec * 1000 + usec // 1000) // round(interval * 1000))


async def test_one_run_per_interval_among_many_callers(store: SessionStore) -> None:
    ran: list[FleetRun] = []

    async def work(run: FleetRun) -> str:
        ran.append(run)
        return "done"

    fleet = [_job(store, work) for _ in range(8)]
    results = await asyncio.gather(*(j.run_once() for _ in range(5) for j in fleet))
    assert results.count("done") == 1 and len(ran) == 1
    assert ran[0].missed is None
    assert ran[0].interval == await _server_interval(store, HOUR)
    status = await fleet[3].status()
    assert (status.runs, status.takeovers, status.running) == (1, 0, False)
    assert status.claimed == status.completed == ran[0].interval
    assert status.last_status == "ok" and status.holder == fleet[0].label
    assert status.to_dict()["runs"] == 1


async def test_a_dead_holders_interval_is_taken_over_once(store: SessionStore) -> None:
    ran: list[FleetRun] = []

    async def work(run: FleetRun) -> None:
        ran.append(run)

    dead, alive = _job(store, work, lease_ttl=5.0), _job(store, work, lease_ttl=5.0)
    claimed = await dead.claim()  # claims, then "dies" without finishing
    assert claimed is not None
    assert await alive.run_once() is None and ran == []  # its lease still holds
    await store.client.pexpire(dead.lease_key, 1)  # the lease lapses
    while await store.client.exists(dead.lease_key):
        await asyncio.sleep(0.005)
    await alive.run_once()
    assert [(r.interval, r.missed) for r in ran] == [(claimed.interval, claimed.interval)]
    await alive.run_once()  # done now: nobody runs it again this interval
    assert len(ran) == 1
    assert not await dead.finish(claimed)  # the dead run's late report changes nothing
    status = await alive.status()
    assert (status.runs, status.takeovers, status.completed) == (1, 1, claimed.interval)


async def test_a_failing_run_counts_and_a_cancelled_run_is_taken_over(
    store: SessionStore,
) -> None:
    calls = 0
    started = asyncio.Event()

    async def failing(run: FleetRun) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("disk full at /secret/path")

    job = _job(store, failing)
    assert await job.run_once() is None and await job.run_once() is None
    status = await job.status()
    assert calls == 1 and status.last_status == "error:RuntimeError" and status.runs == 1
    assert "secret" not in repr(status)

    other = FleetJob(store.client, store.keys, "blocked", HOUR, lambda run: _block(started))
    task = asyncio.create_task(other.run_once())
    await started.wait()
    assert (await other.status()).running
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (await other.status()).running  # the cancelled run freed its lease at once
    ran: list[FleetRun] = []

    async def work(run: FleetRun) -> None:
        ran.append(run)

    other.func = work
    await other.run_once()
    assert len(ran) == 1 and ran[0].missed == ran[0].interval


async def _block(started: asyncio.Event) -> None:
    started.set()
    await asyncio.Event().wait()


async def test_runs_never_overlap_across_intervals(store: SessionStore) -> None:
    release, started = asyncio.Event(), asyncio.Event()

    async def slow(run: FleetRun) -> str:
        started.set()
        await release.wait()
        return "slow"

    async def fast(run: FleetRun) -> str:
        return "fast"

    a, b = _job(store, slow, interval=0.1), _job(store, fast, interval=0.1)
    first = asyncio.create_task(a.run_once())
    await started.wait()
    begin = await _server_interval(store, 0.1)
    while await _server_interval(store, 0.1) < begin + 2:  # later intervals, a still running
        assert await b.run_once() is None
        await asyncio.sleep(0.02)
    release.set()
    assert await first == "slow"
    while (result := await b.run_once()) is None:  # the next interval after a finished
        await asyncio.sleep(0.02)
    assert result == "fast" and (await b.status()).runs == 2


async def test_bad_settings_are_refused(store: SessionStore) -> None:
    async def work(run: FleetRun) -> None:
        return None

    for bad in (0, 0.01, -1, True, "1"):
        with pytest.raises(ValidationError, match="interval"):
            _job(store, work, interval=bad)
    with pytest.raises(ValidationError, match="fleet job name"):
        FleetJob(store.client, store.keys, "Bad Name", HOUR, work)
    assert [k async for k in store.client.scan_iter(match=f"{store.keys.namespace}:*")] == []


def _run_processes(targets: list[tuple[Any, tuple[Any, ...]]]) -> list[int | None]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(targets))
    procs = [ctx.Process(target=t, args=(*args, barrier)) for t, args in targets]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    return [p.exitcode for p in procs]


@pytest.mark.parametrize("kind", ["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
async def test_four_processes_run_once_per_interval_and_take_over_a_killed_run(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """4 OS processes, 10 ticks of 0.4 s each: 10 +- 1 runs, no interval twice; a process
    SIGKILLed inside its run leaves an interval that one survivor's run covers."""
    url = str(request.getfixturevalue(f"{kind}_url"))
    ns, interval = unique_namespace(), 0.4
    workers = [(fleet_member, (url, ns, interval, 10, i == 0)) for i in range(5)]
    codes = await asyncio.to_thread(_run_processes, workers)
    assert codes == [-9, 0, 0, 0, 0]
    store = await SessionStore.connect(url, namespace=ns)
    try:
        killed = int(await store.client.get(f"{ns}:killed"))
        log = [e.decode().split(":") for e in await store.client.lrange(f"{ns}:log", 0, -1)]
        intervals = [int(n) for n, _, _ in log]
        missed = [int(m) for _, m, _ in log if m]
        assert Counter(intervals).most_common(1)[0][1] == 1  # no interval ran twice
        assert missed == [killed]  # the killed run's interval, covered exactly once
        assert 9 <= len(set(intervals) - {killed}) <= 11
        status = await _job(store, _noop).status()
        assert status.runs == len(log) and status.takeovers == 1
    finally:
        await drop_namespace(store.client, ns)
        await store.close()


async def test_four_backup_schedulers_make_one_backup_and_snapshot_per_interval(
    redis_url: str, tmp_path: Path
) -> None:
    """The reported bug: 2 processes with 2 s intervals made 6 backups in 6 s. Here 4
    processes with 0.5 s intervals, 10 ticks each: 10 +- 1 backups and snapshots."""
    ns, directory = unique_namespace(), tmp_path / "b"
    store = await SessionStore.connect(redis_url, namespace=ns)
    try:
        for i in range(20):
            await store.create("web", i, "fleet", data={"i": i})
        args = (redis_url, ns, str(directory), KEY, 0.5, 10)
        codes = await asyncio.to_thread(_run_processes, [(backup_member, args)] * 4)
        assert codes == [0, 0, 0, 0]
        p = Persistence(store, backup_dir=directory, key=KEY)
        backups = p.list_backups()
        snapshots = p.list_backups(snapshots=True)
        assert 9 <= len(backups) <= 11 and 9 <= len(snapshots) <= 11
        for name, files in (("backup", backups), ("snapshot", snapshots)):
            status = await FleetJob(store.client, store.keys, name, 0.5, _noop).status()
            assert status.runs == len(files) and status.last_status == "ok"
        assert backups[0].kind == "full"
        await p.changes.disarm()
    finally:
        await drop_namespace(store.client, ns)
        await store.close()


async def _noop(run: FleetRun) -> None:
    return None
