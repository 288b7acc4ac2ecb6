"""Batch operations: pipelined, grouped by slot on a cluster, each item's result or error."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sessioncache import SessionNotFound, ValidationError, VersionConflict
from sessioncache.system import SessionSystem

from .support.context_workers import start
from .support.namespaces import drop_namespace, unique_namespace


@pytest.fixture
async def system(any_backend_url: str) -> AsyncIterator[SessionSystem]:
    s = await start(any_backend_url, unique_namespace())
    yield s
    await drop_namespace(s.store.client, s.store.keys.namespace)
    await s.shutdown()


async def test_get_many_in_order_with_missing_and_bad_ids(system: SessionSystem) -> None:
    sids = [(await system.create_session(i, i, "telegram")).session_id for i in range(300)]
    asked = [*sids, "telegram:999:999", "not an id", sids[0]]
    results = await system.get_many(asked)
    assert [r.session_id for r in results] == asked
    assert [r.value.session_id for r in results[:300]] == sids  # type: ignore[union-attr]
    assert results[300].ok and results[300].value is None
    assert isinstance(results[301].error, ValidationError)
    assert results[302].value == results[0].value
    with pytest.raises(ValidationError):
        results[301].unwrap()


async def test_set_update_delete_many_report_each_item(system: SessionSystem) -> None:
    sids = [(await system.create_session(i, i, "telegram")).session_id for i in range(5)]
    set_results = await system.set_many(
        {sids[0]: {"a": 1}, sids[1]: {"a": 2}, "telegram:9:9": {"a": 3}, sids[2]: {"x": object()}}
    )
    assert [r.value for r in set_results[:2]] == [2, 2]
    assert isinstance(set_results[2].error, SessionNotFound)
    assert isinstance(set_results[3].error, ValidationError)
    assert (await system.get_session(sids[2])).data == {}  # the bad item wrote nothing
    updated = await system.update_many(
        {
            sids[0]: {"data": {"b": 1}, "delete": ["a"]},
            sids[1]: {"metadata": {"m": 1}, "expected_version": 1},  # stale version
            sids[3]: {"bogus": 1},  # not an update argument
        }
    )
    assert updated[0].ok and updated[0].value.data == {"b": 1}  # type: ignore[union-attr]
    assert isinstance(updated[1].error, VersionConflict)
    assert updated[2].error is not None
    deleted = await system.delete_many([sids[0], sids[0], "telegram:9:9"])
    assert [r.value for r in deleted] == [True, False, False]
    assert [r.value is None for r in await system.get_many(sids[:2])] == [True, False]


async def test_more_items_than_one_pipeline_chunk(system: SessionSystem) -> None:
    system.batch.chunk = 64
    sids = [(await system.create_session(i, 7, "telegram")).session_id for i in range(200)]
    results = await system.set_many({sid: {"n": i} for i, sid in enumerate(sids)})
    assert all(r.value == 2 for r in results)
    got = await system.get_many(sids)
    assert [r.value.data["n"] for r in got] == list(range(200))  # type: ignore[union-attr]


async def test_lost_scripts_are_loaded_again(system: SessionSystem) -> None:
    sid = (await system.create_session(1, 1, "telegram")).session_id
    await system.store.client.script_flush()
    assert (await system.set_many({sid: {"a": 1}}))[0].value == 2
