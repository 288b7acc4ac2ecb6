"""Several OS processes updating the same sessions end with exact counts."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

from sessioncache import SessionStore

from .support import workers
from .support.namespaces import drop_namespace, unique_namespace

PROCESSES, UPDATES, SESSIONS = 4, 500, 10


@pytest.mark.parametrize(
    "which", ["redis_url", pytest.param("cluster_url", marks=pytest.mark.cluster)]
)
async def test_four_processes_times_500_updates_are_exact(
    which: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(which)
    namespace = unique_namespace()
    store = await SessionStore.connect(url, namespace=namespace)
    try:
        ids = [
            (await store.create(f"chat{i}", f"user{i % 3}", "telegram")).session_id
            for i in range(SESSIONS)
        ]
        ctx = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        start_at = time.time() + 3.0
        with ProcessPoolExecutor(PROCESSES, mp_context=ctx) as pool:
            conflicts = await asyncio.gather(
                *(
                    loop.run_in_executor(
                        pool, workers.cas_increments, url, namespace, ids, UPDATES, start_at
                    )
                    for _ in range(PROCESSES)
                )
            )
        sessions = [await store.get(sid) for sid in ids]
        per_session = PROCESSES * UPDATES // SESSIONS
        assert [s.data["counter"] for s in sessions] == [per_session] * SESSIONS
        assert [s.version for s in sessions] == [1 + per_session] * SESSIONS
        assert [s.message_count for s in sessions] == [per_session] * SESSIONS
        assert sum(conflicts) > 0  # the processes really did collide
    finally:
        await drop_namespace(store.client, namespace)
        await store.close()
