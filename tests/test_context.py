"""Context: variables, dialogue slots, history caps, the summarize hook, validation, codecs."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sessioncache import SessionNotFound, ValidationError
from sessioncache.context import ContextConfig
from sessioncache.errors import IntegrityError
from sessioncache.history import HistoryConfig, Message
from sessioncache.serialization import JsonCodec, MsgpackCodec, decode
from sessioncache.system import SessionSystem
from sessioncache.validation import ContextLimits, ContextValidator, VariableSchema

from .support.context_workers import append_messages, append_worker, run_fleet, start
from .support.namespaces import drop_namespace, unique_namespace


@pytest.fixture
async def make(any_backend_url: str) -> AsyncIterator[Any]:
    """Start SessionSystems on the backend under one fresh namespace; cleaned up after."""
    namespace = unique_namespace()
    systems: list[SessionSystem] = []

    async def factory(**options: Any) -> SessionSystem:
        system = await start(any_backend_url, namespace, **options)
        systems.append(system)
        return system

    factory.url = any_backend_url  # type: ignore[attr-defined]
    factory.namespace = namespace  # type: ignore[attr-defined]
    yield factory
    if systems:
        await drop_namespace(systems[0].store.client, namespace)
    for system in systems:
        await system.shutdown()


async def all_keys(system: SessionSystem) -> dict[bytes, Any]:
    client = system.store.client
    keys = [k async for k in client.scan_iter(match=f"{system.store.keys.namespace}:*")]
    out: dict[bytes, Any] = {}
    for key in sorted(keys):
        if b":cfg:" in key:  # the fleet's transition table, published at start
            continue
        kind = (await client.type(key)).decode()
        if kind == "hash":
            out[key] = await client.hgetall(key)
        elif kind == "list":
            out[key] = await client.lrange(key, 0, -1)
        elif kind == "string":
            out[key] = await client.get(key)
        else:
            out[key] = kind
    return out


async def test_variables_round_trip_and_delete(make: Any) -> None:
    system = await make()
    sid = (await system.create_session(1, 2, "telegram")).session_id
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    values = {"name": "Ann", "n": 3, "at": when, "raw": b"\x00\xff", "money": Decimal("1.10")}
    await system.set_variables(sid, values)
    assert await system.get_variables(sid) == values
    assert await system.get_variable(sid, "at") == when
    assert (await system.get_variable(sid, "at")).utcoffset() == dt.timedelta(hours=2)
    assert await system.get_variable(sid, "missing", "d") == "d"
    await system.delete_variable(sid, "n")
    assert "n" not in await system.get_variables(sid)


async def test_context_needs_a_session_and_goes_with_it(make: Any) -> None:
    system = await make()
    with pytest.raises(SessionNotFound):
        await system.set_variable("telegram:1:2", "x", 1)
    with pytest.raises(SessionNotFound):
        await system.append_message("telegram:1:2", "user", "hi")
    assert await all_keys(system) == {}
    sid = (await system.create_session(1, 2, "telegram")).session_id
    await system.set_variable(sid, "x", 1)
    await system.append_message(sid, "user", "hi")
    assert await system.delete_session(sid)
    assert await system.get_variables(sid) == {}
    assert await system.get_history(sid) == []
    assert [k for k in await all_keys(system) if b":cx:" in k or b":hx:" in k] == []


async def test_context_of_an_earlier_session_is_never_seen(make: Any) -> None:
    system = await make()
    sid = (await system.create_session(1, 2, "telegram")).session_id
    await system.set_variable(sid, "x", 1)
    await system.append_message(sid, "user", "old")
    created = (await system.get_session(sid, fresh=True)).created_at
    await system.store.delete(sid)  # the store alone leaves the context keys behind
    # The generation is the creation time in ms: a new session gets another one.
    sid = (await system.create_session(1, 2, "telegram")).session_id
    while (await system.get_session(sid, fresh=True)).created_at == created:
        await system.store.delete(sid)
        sid = (await system.create_session(1, 2, "telegram")).session_id
    assert await system.get_variables(sid) == {}
    assert await system.get_history(sid) == []
    await system.append_message(sid, "user", "new")
    assert [m.content for m in await system.get_history(sid)] == ["new"]
    assert await system.get_variables(sid) == {}


async def test_context_lives_exactly_as_long_as_its_session(make: Any) -> None:
    """The context keys always carry the session's expiry: set by each context write, moved by
    every touch, update and activity event (which write no context), gone with the session."""
    system = await make()
    sid = (await system.create_session(1, 2, "telegram", ttl=100)).session_id
    await system.set_variable(sid, "x", 1)
    await system.append_message(sid, "user", "hi")
    ident = system.store.identity(1, 2, "telegram")
    client, keys = system.store.client, system.store.keys
    names = (keys.session(ident), keys.context(ident), keys.history(ident))

    async def expiries() -> list[int]:
        found = [await client.pexpiretime(name) for name in names]
        assert found[0] > 0 and found == [found[0]] * 3
        return found

    last = (await expiries())[0]
    moves = [
        lambda: system.touch_session(sid, ttl=300),
        lambda: system.update_session(sid, {"y": 2}),  # the session's own ttl (300 s) again
        lambda: system.track_event(sid, "message_received"),
        lambda: system.store.touch(sid, ttl=400),
    ]
    for move in moves:
        while (await expiries())[0] == last:  # each write takes a later server time
            await move()
        last = (await expiries())[0]
    await system.clear_history(sid)  # a new history list takes the expiry too
    await system.append_message(sid, "user", "again")
    await expiries()
    # Gone with the session: once it has expired, so has its context (the same deadline).
    await system.touch_session(sid, ttl=0.2)
    await expiries()
    while await client.exists(names[0]):
        await asyncio.sleep(0.02)
    assert await client.exists(*names[1:]) == 0


async def test_an_update_of_shared_fields_moves_the_context_too(make: Any) -> None:
    """With cross-channel sync, update.lua also takes the sync meta and conflicts keys (last in
    KEYS): the context keys still take the session's new expiry."""
    system = await make(sync_shared_fields=["topic"])
    sid = (await system.create_session(1, 2, "telegram", ttl=100)).session_id
    await system.set_variable(sid, "x", 1)
    await system.append_message(sid, "user", "hi")
    ident = system.store.identity(1, 2, "telegram")
    client, keys = system.store.client, system.store.keys
    names = (keys.session(ident), keys.context(ident), keys.history(ident))
    await system.touch_session(sid, ttl=300)
    before = await client.pexpiretime(names[0])
    while await client.pexpiretime(names[0]) == before:
        await system.update_session(sid, {"topic": "news", "other": 1})
    assert await client.exists(keys.sync_meta(ident)) == 1  # the shared-fields path ran
    found = [await client.pexpiretime(name) for name in names]
    assert found == [found[0]] * 3 and found[0] > before
    assert await system.get_variables(sid) == {"x": 1}


@pytest.mark.parametrize("rules", [(), ({"policy": "idle", "after": 3600, "action": "archive"},)])
async def test_with_sync_every_move_of_the_expiry_moves_the_sync_pair(
    make: Any, rules: tuple[dict[str, Any], ...]
) -> None:
    """A store that syncs names the session's sync meta and conflicts in every script that
    moves its expiry (with the expiry rules' bucket too, or without): touch, a plain update
    and an activity event move them with the session and its context, not only a write of
    shared fields."""
    system = await make(
        sync_shared_fields=["topic"], expiry_rules=list(rules), expiry_interval=3600
    )
    sid = (await system.create_session(1, 2, "telegram", ttl=100)).session_id
    await system.update_session(sid, {"topic": "news"})
    await system.set_variable(sid, "x", 1)
    ident = system.store.identity(1, 2, "telegram")
    client, keys = system.store.client, system.store.keys
    await client.hset(keys.sync_conflicts(ident), "probe", "1")  # as if a conflict were kept
    names = (
        keys.session(ident),
        keys.context(ident),
        keys.sync_meta(ident),
        keys.sync_conflicts(ident),
    )

    async def expiry() -> int:
        found = [await client.pexpiretime(name) for name in names]
        assert found[0] > 0 and found == [found[0]] * 4, found
        return int(found[0])

    last = await client.pexpiretime(names[0])  # the probe has none yet: a move gives it one
    moves = [
        lambda: system.touch_session(sid, ttl=300),
        lambda: system.update_session(sid, {"other": 2}),  # no shared field
        lambda: system.track_event(sid, "message_received"),
        lambda: system.store.touch(sid, ttl=400),
    ]
    for move in moves:
        await move()
        while await expiry() == last:  # each write takes a later server time
            await move()
        last = await expiry()


async def test_a_touched_session_keeps_its_context(make: Any) -> None:
    """Context written while the session had 0.3 s left, then kept alive by a touch alone:
    the context is still there after those 0.3 s."""
    system = await make()
    sid = (await system.create_session(1, 2, "telegram", ttl=0.3)).session_id
    await system.set_variable(sid, "x", 1)
    await system.append_message(sid, "user", "hi")
    written = await system.store.client.pexpiretime(
        system.store.keys.context(system.store.identity(1, 2, "telegram"))
    )
    await system.touch_session(sid, ttl=60)
    while time.time() * 1000 < written + 100:  # past the expiry the context was written with
        await asyncio.sleep(0.02)
    assert await system.get_variables(sid) == {"x": 1}
    assert [m.content for m in await system.get_history(sid)] == ["hi"]


async def test_slots_belong_to_one_dialogue_step(make: Any) -> None:
    system = await make()
    sid = (await system.create_session(1, 2, "telegram")).session_id
    await system.set_slots(sid, {"city": "Paris"}, step="booking")
    await system.set_slots(sid, {"date": "2026-12-01"})
    step = await system.get_slots(sid)
    assert (step.step, step.slots) == ("booking", {"city": "Paris", "date": "2026-12-01"})
    await system.set_slots(sid, {"card": "visa"}, step="payment")
    step = await system.get_slots(sid)
    assert (step.step, step.slots) == ("payment", {"card": "visa"})
    await system.context.clear_slots(sid)
    step = await system.get_slots(sid)
    assert (step.step, step.slots) == (None, {})


async def test_history_in_order_with_tokens_and_metadata(make: Any) -> None:
    system = await make()
    sid = (await system.create_session(1, 2, "telegram")).session_id
    sent = await system.append_message(sid, "user", "hello", tokens=2, lang="en")
    await system.append_message(sid, "assistant", {"text": "hi", "buttons": [1, 2]}, tokens=3)
    history = await system.get_history(sid)
    assert [(m.number, m.role, m.content, m.tokens) for m in history] == [
        (1, "user", "hello", 2),
        (2, "assistant", {"text": "hi", "buttons": [1, 2]}, 3),
    ]
    assert history[0] == sent and history[0].metadata == {"lang": "en"}
    assert history[0].timestamp.tzinfo is dt.UTC
    assert [m.number for m in await system.get_history(sid, limit=1)] == [2]
    assert [m.number for m in await system.get_history(sid, max_tokens=4)] == [2]
    assert [m.number for m in await system.get_history(sid, max_tokens=5)] == [1, 2]
    assert await system.clear_history(sid) == 2
    assert await system.get_history(sid) == []
    assert (await system.append_message(sid, "user", "again")).number == 3


@pytest.mark.parametrize(
    "config,expect",
    [
        (HistoryConfig(max_messages=3, max_bytes=None), [8, 9, 10]),
        (HistoryConfig(max_messages=None, max_bytes=None, max_tokens=7), list(range(3, 11))),
        (HistoryConfig(max_messages=None, max_bytes=200), None),
    ],
    ids=["messages", "tokens", "bytes"],
)
async def test_history_trimmed_to_caps(make: Any, config: HistoryConfig, expect: Any) -> None:
    system = await make(context=ContextConfig(history=config))
    sid = (await system.create_session(1, 2, "telegram")).session_id
    for i in range(1, 11):
        await system.append_message(sid, "user", "x" * 20, tokens=i % 3)
    history = await system.get_history(sid)
    if expect is not None:
        assert [m.number for m in history] == expect
    ident = system.store.identity(1, 2, "telegram")
    client, keys = system.store.client, system.store.keys
    items = await client.lrange(keys.history(ident), 0, -1)
    counters = await client.hmget(keys.context(ident), ["#b", "#t"])
    assert int(counters[0]) == sum(len(i) for i in items)
    assert int(counters[1]) == sum(m.tokens or 0 for m in history)
    if config.max_bytes:
        assert sum(len(i) for i in items) <= 200 < sum(len(i) for i in items) + len(items[0]) * 2


async def test_append_is_one_round_trip_and_retry_safe(make: Any) -> None:
    system = await make()
    sid = (await system.create_session(1, 2, "telegram")).session_id
    _, keys = system.context.keys_of(sid)
    keys = [*keys, system.store.keys.op_log(keys[0])]
    script = system.store.scripts.context_append
    args = system.store.op_args(["", b"M\x92\xa4user\xa2hi", *system.context._caps, "1", "1000"])
    first = await script.run(system.store.client, keys, args)
    again = await script.run(system.store.client, keys, args)  # a client retry of that call
    assert first[0] == again[0] == 1
    for _ in range(20):  # more than any fixed window of recent op ids
        await system.context.append_message(sid, "user", "later")
    late = await script.run(system.store.client, keys, args)  # the first attempt, delivered late
    assert late[0] == 1
    history = [m.content for m in await system.get_history(sid)]
    assert history == ["hi"] + ["later"] * 20


async def test_invalid_context_raises_and_writes_nothing(make: Any) -> None:
    schemas = {
        "age": VariableSchema(type=int, validator=lambda v: 0 <= v < 150),
        "name": VariableSchema(type=str, max_bytes=10, required=True),
    }
    validator = ContextValidator(schemas, ContextLimits(max_variables=3), strict=True)
    system = await make(context=ContextConfig(validator=validator))
    sid = (await system.create_session(1, 2, "telegram")).session_id
    before = await all_keys(system)
    bad: list[dict[str, Any]] = [
        {"name": "Ann", "age": "3"},  # wrong type
        {"name": "Ann", "age": True},  # a bool is not an int here
        {"name": "A" * 11},  # oversized for its schema
        {"name": "Ann", "age": 200},  # refused by the validator
        {"age": 3},  # the required name is missing
        {"name": "Ann", "a": 1, "b": 2, "c": 3},  # past max_variables
        {"name": "Ann", "x": object()},  # not encodable
    ]
    for values in bad:
        with pytest.raises(ValidationError):
            await system.set_variables(sid, values)
        assert await all_keys(system) == before
    await system.set_variables(sid, {"name": "Ann", "age": 3})
    written = await all_keys(system)
    with pytest.raises(ValidationError):
        await system.delete_variable(sid, "name")
    with pytest.raises(ValidationError):
        await system.append_message(sid, "summary", "reserved role")
    with pytest.raises(ValidationError):
        await system.append_message(sid, "user", "x", tokens=-1)
    assert await all_keys(system) == written


async def test_not_strict_logs_schema_violations_but_keeps_limits(make: Any) -> None:
    validator = ContextValidator(
        {"age": VariableSchema(type=int)}, ContextLimits(max_variable_bytes=100), strict=False
    )
    system = await make(context=ContextConfig(validator=validator))
    sid = (await system.create_session(1, 2, "telegram")).session_id
    await system.set_variable(sid, "age", "old")
    assert await system.get_variable(sid, "age") == "old"
    with pytest.raises(ValidationError):
        await system.set_variable(sid, "big", "x" * 200)


async def test_summary_replaces_what_it_summarized_once(make: Any) -> None:
    async def hook(messages: list[Message]) -> tuple[str, int]:
        return "+".join(str(m.content) for m in messages), 1

    history = HistoryConfig(max_messages=4, max_bytes=None, summarize=hook)
    system = await make(context=ContextConfig(history=history))
    sid = (await system.create_session(1, 2, "telegram")).session_id
    for i in range(5):
        await system.append_message(sid, "user", str(i))
    await system.context.wait_summaries()
    got = await system.get_history(sid)
    assert [(m.role, m.content) for m in got] == [
        ("summary", "0+1+2"),
        ("user", "3"),
        ("user", "4"),
    ]
    assert got[0].metadata == {"summarized": 3} and got[0].tokens == 1


async def test_a_failing_hook_releases_its_claim(make: Any) -> None:
    calls = []

    async def hook(messages: list[Message]) -> str:
        calls.append(len(messages))
        if len(calls) == 1:
            raise RuntimeError("model down")
        return "ok"

    history = HistoryConfig(max_messages=2, max_bytes=None, summarize=hook)
    system = await make(context=ContextConfig(history=history))
    sid = (await system.create_session(1, 2, "telegram")).session_id
    for i in range(3):
        await system.append_message(sid, "user", str(i))
    await system.context.wait_summaries()
    await system.append_message(sid, "user", "3")
    await system.context.wait_summaries()
    assert calls[0] == 2 and len(calls) == 2
    assert (await system.get_history(sid))[0].content == "ok"


async def _fleet_appends(
    url: str, namespace: str, sid: str, cap: int | None, summarize: bool, n: int
) -> list[list[int]]:
    if url.startswith("memory://"):
        calls = [append_messages(url, namespace, sid, w, n, cap, summarize) for w in range(4)]
        return list(await asyncio.gather(*calls))
    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"{w}.json") for w in range(4)]
        args = [(url, namespace, sid, w, n, cap, summarize, outs[w]) for w in range(4)]
        await asyncio.get_running_loop().run_in_executor(None, run_fleet, append_worker, args)
        return [json.loads(Path(o).read_text()) for o in outs]


@pytest.mark.slow
@pytest.mark.parametrize("cap", [None, 500], ids=["uncapped", "capped"])
async def test_four_processes_append_in_order(make: Any, cap: int | None) -> None:
    system = await make()
    sid = (await system.create_session(1, 2, "telegram")).session_id
    numbers = await _fleet_appends(make.url, make.namespace, sid, cap, False, 1000)
    assert sorted(n for per in numbers for n in per) == list(range(1, 4001))
    history = await system.get_history(sid)
    assert len(history) == (cap or 4000)
    assert [m.number for m in history] == list(range(4001 - len(history), 4001))
    for writer in range(4):
        mine = [m.content["i"] for m in history if m.content["w"] == writer]
        assert mine == sorted(mine) and len(set(mine)) == len(mine)
        if cap is None:
            assert mine == list(range(1000))


@pytest.mark.slow
async def test_four_processes_summarize_each_message_exactly_once(make: Any) -> None:
    system = await make()
    sid = (await system.create_session(1, 2, "telegram")).session_id
    numbers = await _fleet_appends(make.url, make.namespace, sid, 50, True, 1000)
    appended = sorted(n for per in numbers for n in per)
    assert len(appended) == 4000
    covered: list[int] = []
    summaries = 0
    for m in await system.get_history(sid):
        if m.is_summary:
            summaries += 1
            covered += json.loads(m.content)
        else:
            covered.append(m.number)
    assert summaries >= 1
    assert sorted(covered) == appended  # every message once: none lost, none summarized twice


@pytest.mark.parametrize("codec", [MsgpackCodec(), JsonCodec()], ids=["msgpack", "json"])
def test_codecs_round_trip_every_supported_type(codec: Any) -> None:
    value = {
        "none": None,
        "bool": True,
        "int": -(2**40),
        "float": 1.5,
        "str": "héllo",
        "bytes": b"\x00\x01",
        "list": [1, "a", [2]],
        "aware": dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        "naive": dt.datetime(2026, 1, 1, 12, 30, 1, 5),
        "date": dt.date(2026, 2, 3),
        "time": dt.time(4, 5, 6),
        "delta": dt.timedelta(days=1, seconds=2, microseconds=3),
        "decimal": Decimal("3.14"),
        "uuid": uuid.UUID(int=7),
        "set": {1, 2},
        "$t": {"$t": "b", "v": "not bytes"},  # user data that looks like our tags
    }
    assert decode(codec.encode(value)) == value


def test_codec_errors_are_ours() -> None:
    with pytest.raises(ValidationError):
        MsgpackCodec().encode({"x": object()})
    with pytest.raises(ValidationError):
        JsonCodec().encode(float("nan"))
    with pytest.raises(IntegrityError):
        decode(b"M\xc1")
    with pytest.raises(IntegrityError):
        decode(b"Xabc")


async def test_json_codec_and_msgpack_read_each_other(make: Any) -> None:
    writer = await make(context=ContextConfig(codec="json"))
    sid = (await writer.create_session(1, 2, "telegram")).session_id
    await writer.set_variable(sid, "when", dt.date(2026, 1, 1))
    reader = await make()
    assert await reader.get_variable(sid, "when") == dt.date(2026, 1, 1)
    ident = writer.store.identity(1, 2, "telegram")
    raw = await writer.store.client.hget(writer.store.keys.context(ident), "v:when")
    assert raw.startswith(b'J{"$t"')
    assert await writer.store.client.hget(writer.store.keys.context(ident), "#v") == b"1"
