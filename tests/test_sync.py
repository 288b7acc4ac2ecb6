"""Cross-channel sync: verified links, scopes, strategies decided in Lua, modes, history."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sessioncache import sync_records
from sessioncache.codec import data_field
from sessioncache.errors import (
    BackendUnavailable,
    IdentityOwned,
    LinkError,
    LinkRateLimited,
    ScopeError,
    ValidationError,
    VersionConflict,
)
from sessioncache.hlc import HybridClock
from sessioncache.identity import parse_session_id
from sessioncache.identity_links import IdentityLinks, LinkConfig
from sessioncache.scopes import scoped_identity
from sessioncache.scripts import Script
from sessioncache.store import SessionStore
from sessioncache.sync import Conflict, SyncConfig, SyncField, SyncManager
from sessioncache.sync_listener import SyncListener

from .support.namespaces import drop_namespace, unique_namespace
from .support.sync_workers import larger, resolve_once, write_many, writes

TG, DC = "telegram:123:123", "discord:987:987"


@pytest.fixture
def backend_url(any_backend_url: str) -> str:
    """memory://, a real Redis, a real Cluster, and a Valkey 9 server too."""
    return any_backend_url


@pytest.fixture(params=["redis_url", pytest.param("cluster_url", marks=pytest.mark.cluster),
                        "valkey_url"])
def server_url(request: pytest.FixtureRequest) -> str:
    """A real server other OS processes can reach (memory:// lives inside one process: the
    same races run there as asyncio tasks, test_tasks_converge)."""
    return str(request.getfixturevalue(request.param))


@pytest.fixture
async def server_store(server_url: str) -> AsyncIterator[SessionStore]:
    s = await SessionStore.connect(server_url, namespace=unique_namespace(), socket_timeout=5.0)
    yield s
    await drop_namespace(s.client, s.keys.namespace)
    await s.close()


def manager(store: SessionStore, **cfg: Any) -> SyncManager:
    cfg.setdefault("shared_fields", ["topic", "notes", "count", "tags", "prefs"])
    return SyncManager(store, IdentityLinks(store.client, store.keys), SyncConfig(**cfg))


async def linked(store: SessionStore, sync: SyncManager) -> None:
    code = await sync.links.start_link("telegram", 123)
    await sync.links.confirm_link("discord", 987, code)
    await store.create(123, 123, "telegram")
    await store.create(987, 987, "discord")


async def test_link_scenario_auto(store: SessionStore) -> None:
    sync = manager(store, mode="auto")
    await store.create(123, 123, "telegram")
    await sync.write(TG, {"topic": "flights to Oslo", "private": "x"})
    code = await sync.links.start_link("telegram", 123)
    person = await sync.links.confirm_link("discord", 987, code)
    assert await sync.links.linked_identities("discord", 987) == ["discord:987", "telegram:123"]
    await store.create(987, 987, "discord")
    await sync.pull(DC)  # the create operation
    assert (await store.get(DC)).data == {"topic": "flights to Oslo"}
    await sync.write(DC, {"topic": "flights to Bergen"})
    assert (await store.get(TG)).data["topic"] == "flights to Bergen"
    hist = await sync.history.query(person=person)
    assert [(r.op, r.source, r.target) for r in hist] == [
        ("update", DC, TG), ("create", TG, DC)]
    assert hist[0].result == {"topic": "applied"}
    assert await sync.links.unlink("discord", 987)
    await sync.write(TG, {"topic": "trains"})
    assert (await store.get(DC)).data["topic"] == "flights to Bergen"
    assert (await store.get(TG)).data["topic"] == "trains"


async def test_manual_mode(store: SessionStore) -> None:
    sync = manager(store, mode="manual")
    await linked(store, sync)
    await sync.write(TG, {"topic": "a"})
    assert "topic" not in (await store.get(DC)).data
    assert await sync.sync_sessions(TG) == {DC: {"topic": "applied"}}
    assert (await store.get(DC)).data["topic"] == "a"
    assert await sync.sync_sessions(TG) == {DC: {"topic": "kept"}}  # idempotent


async def test_nothing_shared_syncs_nothing(store: SessionStore) -> None:
    sync = manager(store, mode="manual", shared_fields=())
    await linked(store, sync)
    await store.update(TG, {"topic": "private"})
    assert await sync.sync_sessions(TG) == {}
    assert (await store.get(DC)).data == {}


async def test_codes_wrong_expired_reused_owned(store: SessionStore) -> None:
    links = IdentityLinks(store.client, store.keys, LinkConfig(code_ttl=60))
    code = await links.start_link("telegram", 1)
    for bad in ["", "nonsense", "AAAAAA-AAAAAAAA", code[:7] + "ZZZZZZZZ"]:
        with pytest.raises(LinkError):
            await links.confirm_link("discord", 2, bad)
    assert await links.linked_identities("discord", 2) == ["discord:2"]
    other = await links.start_link("telegram", 5)
    assert await links.confirm_link("discord", 6, other)
    code = await links.start_link("telegram", 1)
    assert await links.confirm_link("slack", 3, code) == "telegram:1"
    with pytest.raises(LinkError):  # reused
        await links.confirm_link("web", 4, code)
    code = await links.start_link("telegram", 1)
    with pytest.raises(IdentityOwned):
        await links.confirm_link("discord", 6, code)
    expiring = await links.start_link("telegram", 1)
    await store.client.pexpire(store.keys.link_code(expiring[:6]), 1)
    while await store.client.exists(store.keys.link_code(expiring[:6])):
        await asyncio.sleep(0.01)  # the server's own expiry, forced to 1 ms above
    with pytest.raises(LinkError):
        await links.confirm_link("web", 4, expiring)
    assert await links.linked_identities("web", 4) == ["web:4"]


async def left_by_its_starter(links: IdentityLinks) -> None:
    """Person "telegram:123" (discord:987, slack:U42) after its starter telegram:123 unlinked."""
    await links.confirm_link("discord", 987, await links.start_link("telegram", 123))
    await links.confirm_link("slack", "U42", await links.start_link("telegram", 123))
    assert await links.unlink("telegram", 123)


async def test_unlinked_starter_linking_again_makes_a_new_person(store: SessionStore) -> None:
    """A person's id is the identity that started its first link; after that identity unlinks,
    the person lives on under its id. A new link it starts makes a new person (a fresh id):
    it never rejoins the old person, nor brings a new identity into it."""
    links = IdentityLinks(store.client, store.keys)
    await left_by_its_starter(links)
    assert await links.linked_identities("discord", 987) == ["discord:987", "slack:U42"]
    with pytest.raises(IdentityOwned):  # a member of the old person is not taken from it
        await links.confirm_link("discord", 987, await links.start_link("telegram", 123))
    person = await links.confirm_link("web", 555, await links.start_link("telegram", 123))
    assert person.startswith("telegram:123#") and person != "telegram:123"
    assert await links.linked_identities("telegram", 123) == ["telegram:123", "web:555"]
    # The old person keeps its id and its remaining identities, and nothing else.
    assert await links.linked_identities("discord", 987) == ["discord:987", "slack:U42"]
    assert await links.persons_of(["discord:987", "slack:U42"]) == ["telegram:123"]
    assert await links.members("telegram:123") == ["discord:987", "slack:U42"]
    assert await links.person_of("web", 555) == person == await links.person_of("telegram", 123)
    # A starter whose name is no living person's id keeps using it.
    assert await links.unlink("telegram", 5) is False
    assert await links.confirm_link("web", 6, await links.start_link("telegram", 5)) == (
        "telegram:5")


async def test_confirm_run_twice_on_retry_links_once(store: SessionStore) -> None:
    """A client retry of a confirm whose reply was lost (the same call again) gets the same
    answer and changes nothing; the used code still links no one else."""
    links = IdentityLinks(store.client, store.keys)
    await left_by_its_starter(links)
    code = await links.start_link("telegram", 123)  # its old person (discord, slack) lives on
    public, secret = code.split("-")
    keys = [store.keys.link_code(public), store.keys.link_fails("web:555"),
            store.keys.link_owners(), store.keys.link_members()]
    args = ["web:555", secret, "5", "10", "900000", "RETRYAB2"]
    first = await links.scripts.link_confirm.run(store.client, keys, args)
    state = await store.client.hgetall(store.keys.link_owners()), await store.client.hgetall(
        store.keys.link_members())
    again = await links.scripts.link_confirm.run(store.client, keys, args)
    assert first == again and first[:2] == [1, b"telegram:123#RETRYAB2"]
    assert (await store.client.hgetall(store.keys.link_owners()),
            await store.client.hgetall(store.keys.link_members())) == state
    assert await links.linked_identities("web", 555) == ["telegram:123", "web:555"]
    with pytest.raises(LinkError):  # used: no other identity links with it
        await links.confirm_link("web", 556, code)
    assert await links.person_of("web", 556) is None


async def test_brute_force_stopped(store: SessionStore) -> None:
    links = IdentityLinks(store.client, store.keys)
    code = await links.start_link("telegram", 1)
    public = code[:6]
    outcomes = {"linked": 0, "refused": 0, "limited": 0}
    for i in range(1000):
        guess = f"{public}-{i:08d}".replace("0", "A").replace("1", "B")
        try:
            await links.confirm_link("discord", 1000 + i % 50, guess)
            outcomes["linked"] += 1
        except LinkRateLimited:
            outcomes["limited"] += 1
        except LinkError:
            outcomes["refused"] += 1
    assert outcomes["linked"] == 0
    with pytest.raises(LinkError):  # burned after max_tries_per_code wrong secrets
        await links.confirm_link("discord", 1, code)
    assert not await store.client.exists(store.keys.link_code(public))
    for _ in range(10):
        with pytest.raises(LinkError):
            await links.confirm_link("discord", 77, "AAAAAA-AAAAAAAA")
    with pytest.raises(LinkRateLimited):
        await links.confirm_link("discord", 77, "AAAAAA-AAAAAAAA")


def test_scopes_never_mix_two_people() -> None:
    with pytest.raises(ScopeError, match="direct message"):
        scoped_identity("chat", "web", "inbox", "alice")
    assert scoped_identity("chat", "telegram", -5, "alice", chat_type="group")[2] == "~chat"
    assert scoped_identity("person", "telegram", 1, 1) == ("telegram", 1, 1, None)
    assert scoped_identity("person", "telegram", 1, 1, person="telegram:1")[0] == "person"
    a = scoped_identity("chat_user_thread", "web", "inbox", "alice")
    b = scoped_identity("chat_user_thread", "web", "inbox", "bob")
    assert a != b


@pytest.mark.parametrize("strategy", ["lww", "fww", "priority", "merge"])
async def test_strategies_converge(store: SessionStore, strategy: str) -> None:
    sync = manager(store, mode="manual", strategy=strategy, priority=["discord", "telegram"])
    await linked(store, sync)
    await sync.write(TG, {"topic": "tg", "count": 2, "tags": ["a"], "prefs": {"x": {"y": 1}}})
    await sync.write(DC, {"topic": "dc", "count": 3, "tags": ["b"], "prefs": {"x": {"z": 2}}})
    await sync.sync_sessions(TG)
    await sync.sync_sessions(DC)
    await sync.sync_sessions(TG)
    a, b = (await store.get(TG)).data, (await store.get(DC)).data
    assert a == b
    expected = {"lww": "dc", "fww": "tg", "priority": "dc", "merge": "dc"}[strategy]
    assert a["topic"] == expected
    if strategy == "merge":
        assert a["count"] == 5 and a["tags"] == ["a", "b"]
        assert a["prefs"] == {"x": {"y": 1, "z": 2}}


async def test_manual_strategy_keeps_both(store: SessionStore) -> None:
    sync = manager(store, mode="manual", strategy="manual")
    await linked(store, sync)
    await sync.write(TG, {"topic": "tg"})
    await sync.write(DC, {"topic": "dc"})
    await sync.sync_sessions(TG)
    await sync.sync_sessions(DC)
    conflicts = await sync.list_conflicts()
    assert sorted((c.session_id, c.stored, c.incoming) for c in conflicts) == [
        (DC, "dc", "tg"), (TG, "tg", "dc")]
    c = next(c for c in conflicts if c.session_id == DC)
    await sync.resolve_conflict(c.conflict_id, choose="incoming")
    assert (await store.get(TG)).data["topic"] == (await store.get(DC)).data["topic"] == "tg"


async def test_custom_strategy(store: SessionStore) -> None:
    sync = manager(store, mode="manual", strategy=lambda f, old, new: max(old or "", new))
    await linked(store, sync)
    await sync.write(TG, {"topic": "b"})
    await sync.write(DC, {"topic": "a"})
    await sync.sync_sessions(DC)
    assert (await store.get(TG)).data["topic"] == "b"
    await sync.sync_sessions(TG)
    assert (await store.get(DC)).data["topic"] == "b"


STRATEGIES = ["lww", "fww", "priority", "merge", "manual", "custom"]
CONVERGE = [
    *(pytest.param("redis_url", s, id=f"redis-{s}") for s in STRATEGIES),
    *(pytest.param("cluster_url", s, id=f"cluster-{s}", marks=pytest.mark.cluster)
      for s in STRATEGIES),
    # Valkey: the two strategies whose Lua differs most (merge states, conflict records).
    *(pytest.param("valkey_url", s, id=f"valkey-{s}") for s in ("merge", "manual")),
]


@pytest.mark.parametrize(("server", "strategy"), CONVERGE)
async def test_processes_converge(
    request: pytest.FixtureRequest, server: str, strategy: str
) -> None:
    backend_url = str(request.getfixturevalue(server))
    store = await SessionStore.connect(backend_url, namespace=unique_namespace())
    try:
        await _processes_converge(store, backend_url, strategy)
    finally:
        await drop_namespace(store.client, store.keys.namespace)
        await store.close()


async def _processes_converge(store: SessionStore, backend_url: str, strategy: str) -> None:
    sync = manager(store, mode="auto", strategy=larger if strategy == "custom" else strategy,
                   priority=["discord", "telegram"])
    await linked(store, sync)
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=write_many,
                         args=(backend_url, store.keys.namespace, sid, strategy, 40, start))
             for sid in (TG, DC) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    await sync.sync_sessions(TG)
    await sync.sync_sessions(DC)
    a, b = (await store.get(TG)).data, (await store.get(DC)).data
    if strategy == "manual":
        conflicts = await sync.list_conflicts()
        assert conflicts
        for c in conflicts:  # neither side lost: stored and incoming are both writes made
            assert c.stored.startswith(("telegram", "discord"))
            assert c.incoming.startswith(("telegram", "discord"))
    else:
        assert a == b
        if strategy == "merge":
            assert a["count"] == 4 * 40  # every increment of four processes counted
        if strategy == "priority":
            assert a["topic"].startswith("discord")
        if strategy == "custom":
            assert a["topic"] == max(a["topic"], b["topic"]) and a["topic"].startswith("telegram")


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_tasks_converge(store: SessionStore, strategy: str) -> None:
    """The races of test_processes_converge as concurrent writers in one process (each with
    its own manager and clock), so memory:// runs them too."""
    sync = manager(store, mode="auto", strategy=larger if strategy == "custom" else strategy,
                   priority=["discord", "telegram"])
    await linked(store, sync)
    await asyncio.gather(*(writes(store, sid, strategy, 15, f"w{i}")
                           for i, sid in enumerate((TG, DC, TG, DC))))
    await sync.sync_sessions(TG)
    await sync.sync_sessions(DC)
    a, b = (await store.get(TG)).data, (await store.get(DC)).data
    if strategy == "manual":
        conflicts = await sync.list_conflicts()
        assert conflicts
        for c in conflicts:  # neither side lost: stored and incoming are both writes made
            assert c.stored.startswith(("telegram", "discord"))
            assert c.incoming.startswith(("telegram", "discord"))
    else:
        assert a == b
        if strategy == "merge":
            assert a["count"] == 4 * 15
        if strategy == "priority":
            assert a["topic"].startswith("discord")


class _LaggingClock(HybridClock):
    """A host whose wall clock lags far behind: its stamps order before every stored one."""

    def now(self) -> str:
        return self._format(1, 0)


@pytest.mark.parametrize("strategy", ["lww", "fww", "priority"])
async def test_writes_ordered_after_the_same_stamp_still_converge(
    store: SessionStore, strategy: str
) -> None:
    """One value synced to both sessions, then a write on each by a lagging clock: each write
    is ordered after the same stored stamp. The two stamps must still differ, or each sync
    reads the other's as "this very write, already applied" (kept) and the sessions keep
    different values for good: how test_tasks_converge[redis-priority] failed under load."""
    cfg: dict[str, Any] = {"strategy": strategy, "priority": ["discord", "telegram"]}
    sync = manager(store, mode="manual", **cfg)
    await linked(store, sync)
    await manager(store, mode="auto", **cfg).write(DC, {"topic": "discord-first"})
    assert (await store.get(TG)).data == {"topic": "discord-first"}
    late = [manager(store, mode="manual", **cfg) for _ in range(2)]  # local writes only
    for m in late:
        m.clock = _LaggingClock()
    await late[0].write(TG, {"topic": "telegram-late"})
    await late[1].write(DC, {"topic": "discord-late"})
    await sync.sync_sessions(TG)
    await sync.sync_sessions(DC)
    a, b = (await store.get(TG)).data, (await store.get(DC)).data
    assert a == b
    assert a["topic"] in ("telegram-late", "discord-late")
    if strategy == "priority":
        assert a["topic"] == "discord-late"


async def test_remembered_index_is_checked(store: SessionStore) -> None:
    sync = manager(store, mode="auto")
    await linked(store, sync)
    await sync.write(TG, {"topic": "a"})  # reads and remembers discord:987's user index
    thread = (await store.create(987, 987, "discord", thread_id=7)).session_id
    await sync.write(TG, {"topic": "b"})  # the remembered index is stale: read again
    assert [(await store.get(s)).data["topic"] for s in (DC, thread)] == ["b", "b"]
    before = await store.get(DC)
    f = SyncField("topic", "topic", sync.clock.now(), "", "v", b"stale")
    assert await sync.apply(DC, "lww", TG, [f], index=("nothing-like-it",)) == {}
    assert await store.get(DC) == before  # refused in the same step: nothing written
    await store.delete(thread)
    await sync.write(TG, {"topic": "c"})
    assert (await store.get(DC)).data["topic"] == "c"
    hist = await sync.history.query(session_id=TG, limit=1)
    assert hist[0].result == {"topic": "applied"}


async def test_recovery_after_kill(server_store: SessionStore, server_url: str) -> None:
    store, backend_url = server_store, server_url
    sync = manager(store, mode="manual")
    await linked(store, sync)
    await store.create(987, 987, "discord", thread_id=7)
    ctx = mp.get_context("spawn")
    from .support.sync_workers import killed_mid_sync

    p = ctx.Process(target=killed_mid_sync, args=(backend_url, store.keys.namespace, TG))
    p.start()
    p.join(60)
    assert p.exitcode == 17
    targets = await sync.linked_sessions(TG)
    assert len(targets) == 2
    got = [(await store.get(t)).data.get("topic") for t in targets]
    assert sorted(got, key=str) == ["killed", None] or sorted(got, key=str) == [None, "killed"]
    assert await sync.recover(min_age=3600) == 0  # a running process may still be on it
    assert await sync.recover(min_age=0) == 1
    assert [(await store.get(t)).data.get("topic") for t in targets] == ["killed", "killed"]
    assert await sync.recover(min_age=0) == 0


async def test_recovery_after_kill_before_any_target(
    server_store: SessionStore, server_url: str
) -> None:
    store = server_store
    sync = manager(store, mode="auto")
    await linked(store, sync)
    ctx = mp.get_context("spawn")
    from .support.sync_workers import killed_after_write

    p = ctx.Process(target=killed_after_write, args=(server_url, store.keys.namespace, TG))
    p.start()
    p.join(60)
    assert p.exitcode == 17
    assert (await store.get(TG)).data == {"topic": "written", "draft": "x"}
    assert (await store.get(DC)).data == {}  # the sync never ran
    assert await sync.recover(min_age=0) == 1  # journaled before the write
    assert (await store.get(DC)).data == {"topic": "written"}
    assert [(h.op, h.target, h.result) for h in await sync.history.query(session_id=DC)] == [
        ("update", DC, {"topic": "applied"})]
    assert await sync.recover(min_age=0) == 0


class _Crash(BaseException):
    """Stands for a process dying (memory:// cannot be reached from another process)."""


async def test_recovery_in_process(store: SessionStore) -> None:
    """The two kill tests' steps on every backend, memory:// included: a sync stopped after
    the local write, and one stopped after the first of two targets, both recovered."""
    sync = manager(store, mode="auto")
    await linked(store, sync)
    thread = (await store.create(987, 987, "discord", thread_id=7)).session_id
    each = sync.targets.each

    async def crash(*args: Any, **kwargs: Any) -> Any:
        raise _Crash

    sync.targets.each = crash  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        await sync.update(TG, {"topic": "first", "draft": "x"})
    assert (await store.get(TG)).data == {"topic": "first", "draft": "x"}
    assert "topic" not in (await store.get(DC)).data
    sync.targets.each = each  # type: ignore[method-assign]
    assert await sync.recover(min_age=0) == 1
    assert [(await store.get(s)).data["topic"] for s in (DC, thread)] == ["first", "first"]
    apply, calls = sync.apply, 0

    async def second_crashes(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise _Crash
        return await apply(*args, **kwargs)

    sync.apply = second_crashes  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        await sync.update(TG, {"topic": "second"})
    got = [(await store.get(s)).data["topic"] for s in (DC, thread)]
    assert sorted(got) == ["first", "second"]  # one target has it, the other not yet
    sync.apply = apply  # type: ignore[method-assign]
    assert await sync.recover(min_age=0) == 1
    assert [(await store.get(s)).data["topic"] for s in (DC, thread)] == ["second", "second"]
    assert await sync.recover(min_age=0) == 0


async def test_writes_announce_themselves(store: SessionStore, backend_url: str) -> None:
    listener = SyncListener(store)
    await listener.start()
    other = await SessionStore.connect(backend_url, namespace=store.keys.namespace)
    try:
        await store.create(123, 123, "telegram")
        await manager(other).write(TG, {"topic": "hello", "private": 1})
        assert await listener.next() == {"session": TG, "fields": ["topic"]}
    finally:
        await other.close()
        await listener.aclose()


async def test_sync_apply_retry_and_missing(store: SessionStore) -> None:
    sync = manager(store, mode="manual")
    await linked(store, sync)
    f = SyncField("topic", "topic", sync.clock.now(), "", "v", b"x")
    keys = sync.script_keys(parse_session_id(TG))
    args = store.op_args(["local", TG, "0", "1", f.stored, f.stamp, "", "v", b"x", "c"])
    first = await store.scripts.sync_apply.run(store.client, keys, args)
    again = await store.scripts.sync_apply.run(store.client, keys, args)  # a client retry
    assert first[0] == 1 and again == [2, first[1]]
    assert (await store.get(TG)).version == first[1]
    gone = sync.script_keys(parse_session_id("telegram:9:9"))
    assert await store.scripts.sync_apply.run(store.client, gone, store.op_args(
        ["local", TG, "0", "1", "topic", f.stamp, "", "v", b"x", "c"])) == [-1]
    assert not await store.client.exists(gone[0], gone[4])


def test_hlc_orders_after_what_it_saw() -> None:
    ahead, behind = HybridClock("a"), HybridClock("b")
    future = f"{int(time.time() * 1000) + 3_600_000:013d}.000000.a"  # a host an hour ahead
    behind.observe(future)
    assert behind.now() > future  # not its own (earlier) wall clock
    stamps = [ahead.now() for _ in range(1000)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 1000


def test_suggestions_are_listed_never_applied() -> None:
    profiles = {"telegram:1": {"email": "A@x.org"}, "discord:2": {"email": "a@x.org "},
                "slack:3": {"phone": "+47 1"}, "web:4": {"email": "b@x.org"}}
    assert IdentityLinks.suggestions(profiles) == [("discord:2", "telegram:1", "email")]


async def test_delete_forgets_stamps(store: SessionStore) -> None:
    sync = manager(store, mode="manual")
    await linked(store, sync)
    await sync.write(TG, {"topic": "x"})
    ident = parse_session_id(TG)
    assert await store.client.exists(store.keys.sync_meta(ident))
    await store.delete(TG)
    await sync.forget(TG)
    assert not await store.client.exists(store.keys.sync_meta(ident))


async def test_bad_merge_value_changes_nothing(store: SessionStore) -> None:
    sync = manager(store, mode="manual", strategy="merge")
    await linked(store, sync)
    before = await store.get(TG)
    with pytest.raises(ValidationError, match="JSON"):
        await sync.write(TG, {"prefs": {"raw": b"bytes"}})
    with pytest.raises(ValidationError):
        await sync.write(TG, {"notes": "x" * (1024 * 1024)})
    after = await store.get(TG)
    assert after.version == before.version and after.data == before.data
    assert not await store.client.exists(store.keys.sync_meta(parse_session_id(TG)))


# -- resolving one conflict: once, whoever races (sync_resolve.lua) ---------------------------

CHOICES = ["incoming", "stored", "mine-2", "mine-3"]
CHOSEN = {"incoming": "tg", "stored": "dc", "mine-2": "mine-2", "mine-3": "mine-3"}


async def one_conflict(store: SessionStore, sync: SyncManager) -> Conflict:
    """Telegram's "tg" synced onto Discord's concurrent "dc": one conflict, kept on DC."""
    await linked(store, sync)
    await sync.write(TG, {"topic": "tg"})
    await sync.write(DC, {"topic": "dc"})
    await sync.sync_sessions(TG)
    [c] = await sync.list_conflicts()
    assert (c.session_id, c.stored, c.incoming) == (DC, "dc", "tg")
    return c


async def resolved_once(store: SessionStore, sync: SyncManager, choice: str) -> None:
    """The choice stored on both sessions, no conflict left, one resolve in history, no plan."""
    want = CHOSEN.get(choice, choice)
    assert (await store.get(DC)).data["topic"] == want
    assert (await store.get(TG)).data["topic"] == want
    assert await sync.list_conflicts() == []
    resolves = [r for r in await sync.history.query() if r.op == "resolve"]
    assert [(r.source, r.target, r.result) for r in resolves] == [(DC, TG, {"topic": "applied"})]
    assert await store.client.hlen(store.keys.sync_journal()) == 0


async def test_resolve_race_tasks(store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four resolvers (each its own manager and clock) list one conflict, then race to settle
    it with different choices: exactly one does, the others get "no conflict" from the
    script and write nothing."""
    sync = manager(store, mode="manual", strategy="manual")
    c = await one_conflict(store, sync)
    listing, barrier = sync_records.list_conflicts, asyncio.Barrier(len(CHOICES))

    async def listed(*args: Any) -> list[Conflict]:
        found = await listing(*args)
        await barrier.wait()  # every resolver has listed it: they race at the script
        return found

    monkeypatch.setattr(sync_records, "list_conflicts", listed)
    racers = [manager(store, mode="manual", strategy="manual") for _ in CHOICES]
    got = await asyncio.gather(
        *(m.resolve_conflict(c.conflict_id, choose=ch) for m, ch in zip(racers, CHOICES,
                                                                          strict=True)),
        return_exceptions=True)
    won = [ch for ch, g in zip(CHOICES, got, strict=True) if isinstance(g, Conflict)]
    lost = [g for g in got if not isinstance(g, Conflict)]
    assert len(won) == 1 and len(lost) == 3
    assert all(isinstance(g, ValidationError) and "resolved by another call" in str(g)
               for g in lost)
    monkeypatch.undo()
    await resolved_once(store, sync, won[0])


async def test_resolve_race_processes(server_store: SessionStore, server_url: str) -> None:
    """The race of test_resolve_race_tasks between four OS processes."""
    store = server_store
    sync = manager(store, mode="manual", strategy="manual")
    c = await one_conflict(store, sync)
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(len(CHOICES))
    procs = [ctx.Process(target=resolve_once, args=(server_url, store.keys.namespace,
                                                    c.conflict_id, ch, start))
             for ch in CHOICES]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    codes = [p.exitcode for p in procs]
    assert sorted(codes) == [0, 3, 3, 3], codes
    await resolved_once(store, sync, CHOICES[codes.index(0)])


async def test_resolve_stale_listing_writes_nothing(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resolver that listed the conflict before another settled it: the script finds the
    record gone, writes nothing, syncs nothing and leaves no plan."""
    sync = manager(store, mode="manual", strategy="manual")
    c = await one_conflict(store, sync)
    listed = await sync.list_conflicts()
    await sync.resolve_conflict(c.conflict_id, choose="stored")
    before = [await store.get(DC), await store.get(TG),
              await store.client.lrange(store.keys.sync_history(), 0, -1)]

    async def stale(*_: Any) -> list[Conflict]:
        return listed

    monkeypatch.setattr(sync_records, "list_conflicts", stale)
    with pytest.raises(ValidationError, match="resolved by another call"):
        await sync.resolve_conflict(c.conflict_id, choose="mine-2")
    monkeypatch.undo()
    with pytest.raises(ValidationError, match="no conflict"):
        await sync.resolve_conflict(c.conflict_id, choose="incoming")
    assert [await store.get(DC), await store.get(TG),
            await store.client.lrange(store.keys.sync_history(), 0, -1)] == before
    await resolved_once(store, sync, "stored")


async def test_resolve_recovers(store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolve killed before its step leaves the conflict standing (recover() drops the
    plan, syncs nothing); killed after it, recover() syncs the choice (last-writer-wins)."""
    sync = manager(store, mode="manual", strategy="manual")
    c = await one_conflict(store, sync)
    before = await store.get(DC)
    with pytest.raises(ValidationError, match="allowed"):  # refused before any step
        await sync.resolve_conflict(c.conflict_id, choose=object())
    assert await store.get(DC) == before
    assert await store.client.hlen(store.keys.sync_journal()) == 0
    await sync._journal("resolve", DC, ["topic"], c.conflict_id)  # then killed
    assert await sync.recover(min_age=0) == 1
    assert [x.conflict_id for x in await sync.list_conflicts()] == [c.conflict_id]
    assert (await store.get(TG)).data["topic"] == "tg"
    assert not [r for r in await sync.history.query() if r.op == "resolve"]

    async def killed(*_: Any, **__: Any) -> Any:
        raise RuntimeError("killed between the steps")

    monkeypatch.setattr(sync.targets, "each", killed)
    with pytest.raises(RuntimeError):
        await sync.resolve_conflict(c.conflict_id, choose="mine-3")
    monkeypatch.undo()
    assert await sync.list_conflicts() == []  # settled in its own step
    assert (await store.get(TG)).data["topic"] == "tg"  # not yet synced
    assert await sync.recover(min_age=0) == 1
    await resolved_once(store, sync, "mine-3")


async def test_resolve_script_retry(store: SessionStore) -> None:
    """A client's retry of sync_resolve.lua (same op id) is answered by the op log: one write."""
    sync = manager(store, mode="manual", strategy="manual")
    c = await one_conflict(store, sync)
    ident, k = parse_session_id(DC), store.keys
    keys = [k.session(ident), k.change_bucket_of(ident), k.op_log(k.session(ident)),
            k.sync_meta(ident), k.sync_conflicts(ident)]
    args = store.op_args([c.conflict_id, "incoming", sync.clock.now(), DC, "0", b""])
    first = await store.scripts.sync_resolve.run(store.client, keys, args)
    again = await store.scripts.sync_resolve.run(store.client, keys, args)
    assert first[0] == 1 and again == [2, first[1]]
    stored = await store.get(DC)
    assert stored.data["topic"] == "tg" and stored.version == first[1]
    assert await sync.list_conflicts() == []


def _reply_lost_after(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Script ``name`` runs (its write is stored) but its reply never arrives."""
    real = Script.run

    async def applied_then_lost(self: Script, *args: Any, **kwargs: Any) -> Any:
        got = await real(self, *args, **kwargs)
        if self.name == name:
            raise BackendUnavailable(f"Redis unavailable during {name}: reply lost")
        return got

    monkeypatch.setattr(Script, "run", applied_then_lost)


async def test_applied_update_whose_reply_is_lost_is_synced_by_recover(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mode "auto": update.lua applied but its reply lost keeps the journaled plan (only a
    refusal drops it), so recover() brings the value to the linked session."""
    sync = manager(store, mode="auto")
    await linked(store, sync)
    _reply_lost_after(monkeypatch, "update")
    with pytest.raises(BackendUnavailable):
        await sync.update(TG, {"topic": "written"})
    monkeypatch.undo()
    assert (await store.get(TG)).data["topic"] == "written"
    assert "topic" not in (await store.get(DC)).data
    assert await sync.recover(min_age=0) == 1
    assert (await store.get(DC)).data["topic"] == "written"
    assert await store.client.hlen(store.keys.sync_journal()) == 0


async def test_refused_update_drops_its_plan(store: SessionStore) -> None:
    """A write update.lua refused (version conflict) wrote nothing: its plan is dropped."""
    sync = manager(store, mode="auto")
    await linked(store, sync)
    with pytest.raises(VersionConflict):
        await sync.update(TG, {"topic": "x"}, expected_version=99)
    assert await store.client.hlen(store.keys.sync_journal()) == 0
    assert "topic" not in (await store.get(TG)).data


async def test_applied_resolve_whose_reply_is_lost_is_synced_by_recover(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sync_resolve.lua applied (choice written, conflict gone) but its reply lost: the plan
    stays and recover() brings the choice to the linked session."""
    sync = manager(store, mode="manual", strategy="manual")
    c = await one_conflict(store, sync)
    _reply_lost_after(monkeypatch, "sync_resolve")
    with pytest.raises(BackendUnavailable):
        await sync.resolve_conflict(c.conflict_id, "mine")
    monkeypatch.undo()
    assert (await store.get(DC)).data["topic"] == "mine"
    assert await sync.list_conflicts() == []
    assert await sync.recover(min_age=0) == 1
    assert (await store.get(TG)).data["topic"] == "mine"


async def test_merge_resync_without_change_keeps_the_version(store: SessionStore) -> None:
    """Strategy "merge": a repeated sync (or a replayed plan) that merges nothing new answers
    "kept" and leaves the target's version alone."""
    sync = manager(store, mode="manual", strategy="merge")
    await linked(store, sync)
    await sync.write(TG, {"count": 5})
    assert await sync.sync_sessions(TG) == {DC: {"count": "applied"}}
    before = (await store.get(DC)).version
    assert await sync.sync_sessions(TG) == {DC: {"count": "kept"}}
    after = await store.get(DC)
    assert (after.data["count"], after.version) == (5, before)
    await sync.increment(TG, "count", 2)  # a real change still applies
    assert await sync.sync_sessions(TG) == {DC: {"count": "applied"}}
    assert (await store.get(DC)).data["count"] == 7


async def test_lagging_writer_keeps_stamps_bounded_and_ordered(store: SessionStore) -> None:
    """A process whose clock is an hour behind the stored stamp observes the stamp its write
    stored: its further writes order after it without growing the stamp."""
    ahead = manager(store, mode="manual")
    behind = manager(store, mode="manual")
    await store.create(123, 123, "telegram")
    ahead.clock.observe(f"{int(time.time() * 1000) + 3_600_000:013d}.000000.x")
    await ahead.write(TG, {"topic": "from the fast host"})
    [(_, first, *_)] = await behind._read_raw(TG, data_field("topic", store.limits))
    stamps = []
    for i in range(50):
        await behind.write(TG, {"topic": f"slow {i}"})
        [cur] = await behind._read_raw(TG, data_field("topic", store.limits))
        stamps.append(cur[1].decode())
    assert (await store.get(TG)).data["topic"] == "slow 49"
    assert stamps == sorted(set(stamps)) and stamps[0] > first.decode()
    # Only the first write is ordered behind the stored stamp: it stores that stamp, "+" and
    # its own (lib/sync.lua); its clock observes that, so the 49 after it are plain stamps.
    assert stamps[0].startswith(first.decode() + "+")
    assert len(stamps[0]) <= 2 * len(first.decode()) + 1
    assert all("+" not in s and len(s) <= len(first.decode()) for s in stamps[1:])


async def test_batch_keeps_a_session_written_during_its_run(store: SessionStore) -> None:
    """run_batch drops a pending session only if it was not written again while being
    synced: a write during the run is synced by the next run."""
    sync = manager(store, mode="batch")
    await linked(store, sync)
    await sync.write(TG, {"topic": "first"})
    read, writes = sync._read, 0

    async def write_meanwhile(*args: Any, **kwargs: Any) -> Any:
        nonlocal writes
        got = await read(*args, **kwargs)
        if writes == 0:
            writes += 1
            await sync.write(TG, {"topic": "second"})  # another task writes meanwhile
        return got

    sync._read = write_meanwhile  # type: ignore[method-assign]
    assert await sync.run_batch() == 1
    sync._read = read  # type: ignore[method-assign]
    assert (await store.get(DC)).data["topic"] == "first"
    assert await sync.run_batch() == 1
    assert (await store.get(DC)).data["topic"] == "second"
    assert await sync.run_batch() == 0  # nothing pending any more


async def test_sync_meta_and_conflicts_expire_with_a_kept_alive_session(
    store: SessionStore,
) -> None:
    """A session's sync meta and conflicts take its expiry on every write that moves it
    (touch, a plain update), not only on a shared-field write: a session kept alive keeps
    its stamps, and a later incoming value still meets them (a conflict under "manual")."""
    sync = manager(store, mode="manual", strategy="manual")
    await sync.links.confirm_link("discord", 987, await sync.links.start_link("telegram", 123))
    await store.create(123, 123, "telegram")
    await store.create(987, 987, "discord", ttl=60)
    await sync.write(DC, {"topic": "dc"})
    dc = parse_session_id(DC)
    session, meta = store.keys.session(dc), store.keys.sync_meta(dc)
    conflicts = store.keys.sync_conflicts(dc)
    await store.client.hset(conflicts, "probe", "1")  # a stand-in for a kept conflict

    async def expiries() -> list[int]:
        return [int(await store.client.pexpiretime(k)) for k in (session, meta, conflicts)]

    await store.touch(DC, ttl=3600)  # kept alive: an hour more
    after_touch = await expiries()
    assert after_touch[0] > 0 and after_touch == [after_touch[0]] * 3, after_touch
    await store.update(DC, {"private": "x"})  # not a shared field
    after_update = await expiries()
    assert after_update == [after_update[0]] * 3, after_update
