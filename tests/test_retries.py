"""A retried or late write applies at most once within the retry horizon (lua/lib/ops.lua)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time

from sessioncache import SessionStore
from sessioncache.backends import RedisSettings
from sessioncache.embedded import EmbeddedRedis
from sessioncache.store import RETRY_MARGIN_S, retry_horizon_ms

from .support.namespaces import unique_namespace
from .support.proxy import HoldingProxy
from .support.retry_workers import STALL_OPTIONS, write

WRITERS = 8


def test_the_horizon_covers_every_attempt_of_a_call() -> None:
    settings = RedisSettings(
        socket_timeout=2.0, socket_connect_timeout=1.0, retries=4, backoff_cap=0.5
    )
    assert retry_horizon_ms(settings) == round((5 * (2.0 + 1.0 + 0.5) + RETRY_MARGIN_S) * 1000)


# -- the script contract, on every backend ------------------------------------------------------


async def test_a_first_attempt_arriving_after_its_retry_and_many_writes_applies_once(
    store: SessionStore,
) -> None:
    s = await store.create("late", "u", "web")
    keys = store._session_keys(store.identity("late", "u", "web"))
    late = store.op_args([store.default_ttl_ms, "1", ""])
    assert (await store.scripts.touch(store.client, keys, late))[0] == 1  # the retry
    for _ in range(50):  # more than any fixed window of recent writes
        await store.touch(s.session_id, messages=1)
    assert (await store.scripts.touch(store.client, keys, late))[0] == 2  # the first attempt
    assert (await store.get(s.session_id)).message_count == 51


async def test_the_same_op_id_with_other_arguments_is_another_call(store: SessionStore) -> None:
    # An op id names a call together with its digest: a collision (or a reused op id) with other
    # arguments is applied as the write it is, never answered "already applied" (which would
    # silently drop it), and each of the two calls still applies once on a retry.
    s = await store.create("reuse", "u", "web")
    keys = store._session_keys(store.identity("reuse", "u", "web"))
    first = store.op_args(["", "version", store.default_ttl_ms, "", "100", "1", "d:a", "1"])
    assert (await store.scripts.update.run(store.client, keys, first))[0] == 1
    other = store.op_args(["", "version", store.default_ttl_ms, "", "100", "1", "d:a", "2"])
    other[0] = first[0]  # the op id of the first call, with different arguments
    assert other[1] != first[1]
    assert await store.scripts.update.run(store.client, keys, other) == [1, 3]
    assert await store.scripts.update.run(store.client, keys, first) == [2, 3]
    assert await store.scripts.update.run(store.client, keys, other) == [2, 3]
    got = await store.get(s.session_id)
    assert (got.version, got.data) == (3, {"d:a": "2"})


async def test_a_late_delete_does_not_remove_the_session_created_after_it(
    store: SessionStore,
) -> None:
    ident = store.identity("del", "u", "web")
    await store.create("del", "u", "web")
    keys = list(store._session_keys(ident))
    delete = store.op_args([ident.suffix])
    assert await store.scripts.delete.run(store.client, keys, delete) == 1
    again = await store.create("del", "u", "web", data={"new": True})
    assert await store.scripts.delete.run(store.client, keys, delete) == 2
    assert (await store.get(again.session_id)).data == {"new": True}


async def test_a_late_create_does_not_bring_back_a_deleted_session(store: SessionStore) -> None:
    ident = store.identity("cre", "u", "web")
    keys, args = store._create_args(ident, "create", {"x": 1}, None, "new", 0, None)
    assert (await store.scripts.create.run(store.client, keys, args))[0] == 1
    assert await store.delete(ident.session_id)
    assert (await store.scripts.create.run(store.client, keys, args)) == [1, []]
    assert not await store.exists(ident.session_id)


async def test_the_op_log_expires_after_the_horizon_and_is_capped(store: SessionStore) -> None:
    s = await store.create("log", "u", "web")
    log = store.keys.op_log(s.session_key)
    assert 0 < await store.client.pttl(log) <= int(store._horizon_ms)
    assert await store.client.zcard(log) == 1  # <op id>:<digest>=
    for _ in range(5):
        await store.touch(s.session_id)
    assert await store.client.zcard(log) == 6
    assert not [k async for k in store.client.scan_iter(match=store.keys.session_pattern())
                if k == log.encode()]



async def test_one_write_in_eight_trims_the_op_log_by_size_and_age(store: SessionStore) -> None:
    # The writes that trim are picked by their op id's last character (a multiple of 8: "H" is
    # 72, "B" is 66), so this test picks them itself.
    s = await store.create("cap", "u", "web")
    ident = store.identity("cap", "u", "web")
    log = store.keys.op_log(s.session_key)
    keys = list(store._session_keys(ident))

    async def touch(last: str) -> None:
        args = store.op_args([store.default_ttl_ms, "0", ""])
        args[0] = args[0][:-1] + last.encode()
        assert (await store.scripts.touch.run(store.client, keys, args))[0] == 1

    for _ in range(1009):  # with the create's record: 1010 writes, none of them trimming
        await touch("B")
    assert await store.client.zcard(log) == 1010
    await touch("H")
    assert await store.client.zcard(log) == 1000  # the newest 1000 writes
    # Age every record past the horizon (score 1 ms after the epoch).
    await store.client.zadd(log, dict.fromkeys(await store.client.zrange(log, 0, -1), 1), xx=True)
    await touch("B")  # a write that does not trim leaves the old records
    assert await store.client.zcard(log) == 1001
    await touch("H")
    assert await store.client.zcard(log) == 2  # the two writes within the horizon
    assert 0 < await store.client.pttl(log) <= int(store._horizon_ms)


# -- faults on a private server -----------------------------------------------------------------



async def test_sigstop_past_socket_timeout_with_8_writer_processes_applies_each_call_once(
    private_server: EmbeddedRedis,
) -> None:
    """Stop redis-server for 1.6 s (> socket_timeout) while 8 processes write one session:
    every in-flight call times out, is retried on a new connection, and its first attempt is
    still in the server's socket buffer when it resumes. Each call must count exactly once."""
    assert private_server.process is not None
    url, ns, n = private_server.url, unique_namespace(), 25
    store = await SessionStore.connect(url, namespace=ns, **STALL_OPTIONS)
    try:
        session = await store.create("stall", "u", "web")
        await store.client.config_resetstat()
        ctx = multiprocessing.get_context("spawn")
        gate = ctx.Barrier(WRITERS + 1)
        procs = [
            ctx.Process(target=write, args=(url, ns, session.session_id, w, n, gate))
            for w in range(WRITERS)
        ]
        for p in procs:
            p.start()
        await asyncio.to_thread(gate.wait)
        os.kill(private_server.process.pid, signal.SIGSTOP)
        try:
            time.sleep(1.6)  # the fault itself: a server paused past every socket timeout
        finally:
            os.kill(private_server.process.pid, signal.SIGCONT)
        for p in procs:
            await asyncio.to_thread(p.join, 120)
        assert [p.exitcode for p in procs] == [0] * WRITERS  # every call was acknowledged
        calls = WRITERS * 2 * n
        got = await store.get(session.session_id)
        assert got.message_count == calls
        assert got.version == 1 + calls
        assert got.data == {f"w{w}": n - 1 for w in range(WRITERS)}
        stats = await store.client.info("commandstats")
        # More scripts ran than calls were made: the stalled first attempts did arrive.
        assert stats["cmdstat_evalsha"]["calls"] > 2 * calls + 1  # + create
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(private_server.process.pid, signal.SIGCONT)
        await store.close()


async def test_a_request_delivered_after_its_retry_applies_once(
    private_server: EmbeddedRedis,
) -> None:
    """A proxy holds a touch back; the client times out and retries (applied), 20 more writes
    land, then the held first attempt reaches the server: it must be recognised, not applied."""
    proxy = await HoldingProxy(private_server.port).start()
    ns = unique_namespace()
    store = await SessionStore.connect(
        f"redis://127.0.0.1:{proxy.port}", namespace=ns, **STALL_OPTIONS
    )
    try:
        s = await store.create("held", "u", "web")
        proxy.armed = True
        await store.touch(s.session_id, messages=1)  # held, timed out, retried: applied
        for _ in range(20):
            await store.set_field(s.session_id, "n", 1)
        reply = await proxy.release()
        assert reply.startswith(b"*3\r\n:2\r\n")  # {2, expiry, count}: already applied
        got = await store.get(s.session_id)
        assert (got.message_count, got.version) == (1, 21)
    finally:
        await store.close()
        await proxy.stop()
