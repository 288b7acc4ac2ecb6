"""The expiry engine on every backend: rules and validation, on-access decisions, the sweep,
actions (archive, delete, suspend, notify, merge, progressive), archive and restore."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sessioncache.errors import ScriptError, SessionExpired, ValidationError
from sessioncache.expiry import ExpiryNotice, load_rules_toml, parse_rules
from sessioncache.expiry.archive import split_archive_id
from sessioncache.expiry.engine import ExpiryEngine
from sessioncache.expiry.policies import Daily, ExpirySpec, Period, Usage, due_at
from sessioncache.identity import parse_session_id
from sessioncache.scripts import compose
from sessioncache.store import SessionStore
from sessioncache.system import SessionSystem

from .support.namespaces import drop_namespace, unique_namespace


def _kind(url: str) -> str:
    if url.startswith("memory://"):
        return "MEMORY"
    return "CLUSTER" if "+cluster" in url else "REDIS"


@pytest.fixture
async def make(backend_url: str) -> AsyncIterator[Any]:
    """Build SessionSystems with expiry rules on the test's backend; dropped afterwards."""
    made: list[SessionSystem] = []

    async def build(rules: list[dict[str, Any]], **options: Any) -> SessionSystem:
        system = await SessionSystem.start(
            _kind(backend_url),
            {"url": backend_url},
            namespace=unique_namespace(),
            expiry_rules=rules,
            expiry_interval=3600.0,
            **options,
        )
        made.append(system)
        return system

    yield build
    for system in made:
        await drop_namespace(system.store.client, system.store.keys.namespace)
        await system.shutdown()


async def _until(system: SessionSystem, ms: int) -> None:
    """Wait for the server clock to pass ``ms`` (a deadline): awaiting the time itself."""
    while await system.expiry._now() < ms:
        await asyncio.sleep(0.02)


async def _deadline(system: SessionSystem, sid: str) -> int:
    info = await system.get_expiry_info(sid)
    assert info is not None and info.deadline_ms is not None
    return info.deadline_ms


async def _events(system: SessionSystem, sid: str) -> list[tuple[str, Any]]:
    return [(e.type, e.fields.get("action")) for e in await system.get_events(sid)]


# -- rules ------------------------------------------------------------------------------------

BAD_RULES = [
    ({"policy": "sometimes", "action": "archive"}, "rule 0", "policy"),
    ({"policy": "idle", "after": 10, "action": "explode"}, "rule 0", "action"),
    ({"policy": "idle", "after": -5, "action": "archive"}, "rule 0", "after"),
    ({"policy": "idle", "action": "archive"}, "rule 0", "after"),
    ({"policy": "absolute", "after": "1h", "action": "delete"}, "rule 0", "after"),
    ({"policy": "daily", "at": "04:00", "tz": "Mars/Olympus", "action": "archive"}, "rule 0", "tz"),
    ({"policy": "daily", "at": "25:00", "tz": "UTC", "action": "archive"}, "rule 0", "at"),
    ({"policy": "daily", "at": "4 am", "action": "archive"}, "rule 0", "at"),
    ({"policy": "usage", "action": "suspend"}, "rule 0", "messages"),
    ({"policy": "hybrid", "any": [{"policy": "idle"}], "action": "delete"}, "any[0]", "after"),
    (
        {"policy": "idle", "after": 5, "action": "archive", "warn_before": -1},
        "rule 0",
        "warn_before",
    ),
    (
        {"policy": "idle", "after": 5, "action": "archive", "chat_type": "room"},
        "rule 0",
        "chat_type",
    ),
    ({"policy": "idle", "after": 5, "action": "archive", "colour": "red"}, "rule 0", "colour"),
    (
        {"policy": "idle", "after": 5, "action": "progressive", "stages": [{"after": 1}]},
        "stages[0]",
        "action",
    ),
]


@pytest.mark.parametrize(("rule", "where", "field"), BAD_RULES)
def test_bad_rules_name_the_rule_and_the_field(
    rule: dict[str, Any], where: str, field: str
) -> None:
    good = {"policy": "idle", "after": 60, "action": "archive", "name": "first"}
    with pytest.raises(ValidationError) as err:
        parse_rules([rule] if where != "rule 1" else [good, rule])
    assert where in str(err.value) and repr(field) in str(err.value)


async def test_bad_rules_write_nothing(backend_url: str) -> None:
    ns = unique_namespace()
    with pytest.raises(ValidationError, match=r"rule 1.*'tz'"):
        await SessionSystem.start(
            _kind(backend_url),
            {"url": backend_url},
            namespace=ns,
            expiry_rules=[
                {"policy": "idle", "after": 60, "action": "archive"},
                {"policy": "daily", "at": "04:00", "tz": "Nowhere/City", "action": "archive"},
            ],
        )
    probe = await SessionStore.connect(backend_url, namespace=ns)
    try:
        assert [k async for k in probe.client.scan_iter(match=f"{ns}:*")] == []
    finally:
        await probe.close()


def test_the_issue_dict_forms_and_toml_load(tmp_path: Path) -> None:
    rules = parse_rules(
        [
            {"policy": "idle", "after": 1800, "action": "archive"},
            {"policy": "absolute", "after": 86400, "action": "delete"},
            {"policy": "usage", "messages": 500, "action": "suspend"},
            {
                "policy": "daily",
                "at": "04:00",
                "tz": "Europe/Berlin",
                "grace": 600,
                "action": "archive",
            },
            {"policy": "idle", "after": 3600, "action": "archive", "warn_before": 300},
            {
                "policy": "hybrid",
                "any": [{"policy": "idle", "after": 60}, {"policy": "usage", "messages": 9}],
                "action": "delete",
            },
        ]
    )
    assert [r.policy.kind for r in rules] == [
        "idle",
        "absolute",
        "usage",
        "daily",
        "idle",
        "hybrid",
    ]
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[rule]]\nname = "groups"\npolicy = "idle"\nafter = 600\naction = "archive"\n'
        'chat_type = "group"\n\n[[rule]]\npolicy = "custom"\nfunc = "vip"\naction = "notify"\n'
    )
    loaded = load_rules_toml(path, {"vip": lambda s: False})
    assert [r.name for r in loaded] == ["groups", "rule1"]
    path.write_text(
        '[[rule]]\npolicy = "daily"\nat = "04:00"\ntz = "Bad/Zone"\naction = "archive"\n'
    )
    with pytest.raises(ValidationError, match=r"rule 0.*'tz'"):
        load_rules_toml(path)


def test_daily_boundaries_follow_the_time_zone_across_dst() -> None:
    berlin = Daily(4, 0, "Europe/Berlin")
    before_dst = dt.datetime(2026, 3, 28, 12, tzinfo=dt.UTC)  # DST starts 29 March
    nxt = berlin.next_boundary(round(before_dst.timestamp() * 1000))
    assert dt.datetime.fromtimestamp(nxt / 1000, dt.UTC) == dt.datetime(
        2026, 3, 29, 2, tzinfo=dt.UTC
    )
    nxt = berlin.next_boundary(nxt)
    assert dt.datetime.fromtimestamp(nxt / 1000, dt.UTC) == dt.datetime(
        2026, 3, 30, 2, tzinfo=dt.UTC
    )


async def test_lua_and_python_agree_on_every_deadline(make: Any) -> None:
    system = await make([])
    rng = random.Random(12)
    probe = compose(
        "probe",
        "local out = {}\n"
        "for i = 1, #ARGV, 4 do\n"
        "  local x = ARGV[i] ~= '' and ARGV[i] or nil\n"
        "  out[#out + 1] = expiry_due(x, ARGV[i + 1], tonumber(ARGV[i + 2]), "
        "tonumber(ARGV[i + 3])) or -1\n"
        "end\n"
        "return out\n",
    )
    cases, args = [], []
    for _ in range(400):

        def maybe(hi: int) -> int | None:
            return rng.randrange(0, hi) if rng.random() < 0.5 else None

        spec = ExpirySpec(
            "r", rng.choice(["any", "all"]), maybe(10**7), maybe(10**6), maybe(20), maybe(10**5)
        )
        a, m = rng.randrange(0, 10**7), rng.randrange(0, 30)
        cases.append((spec, a, m))
        args += ["" if spec.fixed is None else str(spec.fixed), spec.field_y(), str(a), str(m)]
    lua = await probe.run(system.store.client, [], args)
    expected = [due_at(s, a, m) for s, a, m in cases]
    assert [None if int(v) == -1 else int(v) for v in lua] == expected


async def test_lua_and_python_restart_a_period_alike(make: Any) -> None:
    """lib/period.lua's period_restart (the restoring script) moves the message limit to what
    arm() gives the same rule in a period starting with the restored message count, and
    records the start as Period reads it back."""
    system = await make([])
    rng = random.Random(13)
    probe = compose(
        "probe",
        "local y, m = period_restart(KEYS[1], tonumber(ARGV[1]))\n"
        "return {y or '', m, redis.call('HGET', KEYS[1], 'b'), "
        "redis.call('HEXISTS', KEYS[1], 'x'), redis.call('HEXISTS', KEYS[1], 'w')}\n",
    )
    ident = system.store.identity("probe", "u", "web")
    key = system.store.keys.session(ident)
    for _ in range(60):
        messages = rng.randrange(1, 50)
        base = rng.choice([None, rng.randrange(0, 10**6)])
        spent = rng.randrange(0, 100)
        mode = rng.choice(["any", "all", "py"])
        period = Period(1000, base or 0, restored=base is not None)
        ctx = period.context(5000, 0)
        policy: Any = Usage(messages) if mode != "py" else Usage(tokens=messages)
        armed = policy.spec("r", ctx)
        if mode == "all":
            armed = ExpirySpec("r", "all", 9000, 60_000, armed.limit)
        restored_m = (base or 0) + spent
        fields = {"y": armed.field_y(), "m": str(restored_m), "x": "9000", "w": "9000:1"}
        if base is not None:
            fields["b"] = period.field_b()
        await system.store.client.delete(key)
        await system.store.client.hset(key, mapping=fields)
        y, m, b, has_x, has_w = await probe.run(system.store.client, [key], ["777"])
        assert (int(m), has_x, has_w) == (restored_m, 0, 0)
        if mode == "py":
            assert y.decode() == armed.field_y()  # Python decides: nothing to move in y
        else:
            again = Period(777, restored_m).context(5000, 0)
            limit = Usage(messages).spec("r", again).limit
            expected = dataclasses.replace(armed, fixed=None, limit=limit)
            assert ExpirySpec.parse(None, y) == expected
        assert b.decode() == f"777|{restored_m}|"
        assert Period.of(_with_b(b)) == Period(777, restored_m, restored=True)
    await system.store.client.delete(key)


def _with_b(b: bytes) -> Any:
    """A Session whose stored field b is ``b`` (Period.of reads only that and created_at)."""
    from sessioncache.models import Platform, Session

    now = dt.datetime.now(dt.UTC)
    s = Session("web:1:u", "k", Platform.WEB, "1", "u", None, "new", now, now, now, now, 1, 0)
    s._expiry = (None, b"any||1||r|0", None, b)
    return s


# -- on access --------------------------------------------------------------------------------


async def test_a_message_after_the_idle_deadline_goes_to_a_fresh_session(make: Any) -> None:
    system = await make([{"policy": "idle", "after": 0.4, "action": "archive"}])
    old = await system.create_session(1, "u", data={"topic": "old"})
    await system.track_event(old.session_id, "message_received", text="first")
    await _until(system, await _deadline(system, old.session_id))
    with pytest.raises(SessionExpired):  # the bare store refuses: the script checked first
        await system.store.touch(old.session_id, messages=1)
    await system.touch_session(old.session_id, messages=1)  # the triggering message
    fresh = await system.get_session(old.session_id)
    assert fresh is not None and fresh.message_count == 1 and fresh.data == {}
    archive_id = f"{old.session_id}#{round(old.created_at.timestamp() * 1000)}"
    assert fresh.metadata["previous_session"] == archive_id
    again = await system.get_or_create_session(1, "u")
    assert again.created_at == fresh.created_at  # not past its own deadline: the same one
    stats = await system.get_statistics()
    assert stats.expiry_actions == {"archive": 1}
    archived = await system.list_archived("u")
    assert [a.archive_id for a in archived] == [archive_id]


async def test_get_or_create_after_the_deadline_acts_once_and_returns_a_fresh_session(
    make: Any,
) -> None:
    system = await make([{"policy": "absolute", "after": 0.3, "action": "delete"}])
    old = await system.get_or_create_session(7, "u", data={"n": 1})
    await _until(system, await _deadline(system, old.session_id))
    results = await asyncio.gather(*(system.get_or_create_session(7, "u") for _ in range(20)))
    assert len({r.created_at for r in results}) == 1 and results[0].created_at > old.created_at
    assert (await system.get_statistics()).expiry_actions == {"delete": 1}
    assert results[0].data == {}


async def test_usage_limit_is_decided_on_the_write_that_would_pass_it(make: Any) -> None:
    system = await make([{"policy": "usage", "messages": 3, "action": "suspend"}])
    s = await system.create_session(2, "u")
    for _ in range(3):
        await system.touch_session(s.session_id, messages=1)
    await system.touch_session(s.session_id, messages=1)  # the 4th: the rule applies first
    after = await system.get_session(s.session_id)
    assert after is not None and after.state == "suspended" and after.message_count == 4
    assert (await system.get_statistics()).expiry_actions == {"suspend": 1}
    events = await _events(system, s.session_id)
    # The acting script moved it through the state machine: one state_changed event after
    # the expired one, in the same call.
    assert events[-2:] == [("expired", "suspend"), ("state_changed", None)]


# -- sweep ------------------------------------------------------------------------------------


async def test_concurrent_sweeps_act_once_and_spare_touched_sessions(make: Any) -> None:
    system = await make([{"policy": "idle", "after": 2.0, "action": "archive"}])
    sids = [(await system.create_session(f"c{i}", f"u{i % 5}")).session_id for i in range(60)]
    first = min([await _deadline(system, s) for s in sids])
    await _until(system, first - 1000)
    survivors = sids[:10]
    await asyncio.gather(*(system.touch_session(s) for s in survivors))  # deadlines move on
    await _until(system, max([await _deadline(system, s) for s in sids[10:]]))
    dry = await system.cleanup_expired_sessions(dry_run=True)
    assert dry.actions == {"archive": 50} and dry.dry_run
    reports = await asyncio.gather(*(system.cleanup_expired_sessions() for _ in range(4)))
    assert sum(r.actions.get("archive", 0) for r in reports) == 50
    assert (await system.get_statistics()).expiry_actions == {"archive": 50}
    for sid in survivors:
        assert await system.store.find_by_id(sid) is not None
    assert json.loads(json.dumps(reports[0].to_dict()))["dry_run"] is False


async def test_daily_reset_waits_for_the_idle_gap_of_a_session_active_before_the_boundary(
    make: Any,
) -> None:
    """Scaled down: a boundary 0.5 s ahead and a grace of 0.8 s stand for 04:00 and 600 s."""
    system = await make(
        [{"policy": "daily", "at": "04:00", "tz": "UTC", "grace": 1, "action": "archive"}]
    )
    busy = await system.create_session(3, "u")
    quiet = await system.create_session(4, "u")
    now = await system.expiry._now()
    boundary, grace = now + 500, 800
    for s, y in (
        (busy, ExpirySpec("rule0", fixed=boundary, grace=grace)),
        (quiet, ExpirySpec("rule0", fixed=boundary)),
    ):
        key = system.store.keys.session(system.store.identity(s.chat_id, "u", "web"))
        index = system.expiry.index_of(system.store.identity(s.chat_id, "u", "web"))
        await system.store.scripts.expiry_arm.run(
            system.store.client, [key, index], [str(y.fixed), y.field_y(), ""]
        )
    await system.touch_session(busy.session_id)  # active just before the boundary
    await _until(system, boundary + 1)
    report = await system.cleanup_expired_sessions()
    assert report.actions == {"archive": 1}  # the quiet one, at the boundary
    assert await system.store.find_by_id(busy.session_id) is not None
    await system.touch_session(busy.session_id)  # still within its grace gap: kept going
    await _until(system, await _deadline(system, busy.session_id))
    assert (await system.cleanup_expired_sessions()).actions == {"archive": 1}  # next idle gap
    assert await system.store.find_by_id(busy.session_id) is None


async def test_warning_comes_before_the_action_for_every_session(make: Any) -> None:
    notices: list[ExpiryNotice] = []

    async def record(notice: ExpiryNotice) -> None:
        notices.append(notice)

    system = await make(
        [{"policy": "idle", "after": 0.6, "action": "notify", "warn_before": 0.3}],
        expiry_notify=record,
    )
    channel = system.store.keys.expiry_channel()
    pubsub = system.store.client.pubsub() if _kind_of(system) != "CLUSTER" else None
    if pubsub is not None:
        await pubsub.subscribe(channel)
    sids = [(await system.create_session(f"w{i}", "u")).session_id for i in range(12)]
    # Half are swept in the warning window first; the rest only after the deadline, when
    # one script call records the warning and the action in that order.
    first = await _deadline(system, sids[0])
    await _until(system, first - 250)
    await system.cleanup_expired_sessions()
    await _until(system, max([await _deadline(system, s) for s in sids]))
    await system.cleanup_expired_sessions()
    by_session: dict[str, list[str]] = {}
    for n in notices:
        by_session.setdefault(n.session_id, []).append(n.kind)
    assert by_session == {s: ["warn", "notify"] for s in sids}
    for sid in sids:
        assert [a for t, a in await _events(system, sid) if t == "expired"] == ["warn", "notify"]
    assert (await system.get_statistics()).expiry_actions == {"warn": 12, "notify": 12}
    if pubsub is not None:
        got: list[str] = []
        for _ in range(200):  # None for the subscribe confirmation; 24 messages are queued
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if msg is not None:
                got.append(msg["data"].decode())
            if len(got) == 24:
                break
        for sid in sids:
            kinds = [m.split()[0] for m in got if m.endswith(" " + sid)]
            assert kinds == ["warn", "notify"]
        await pubsub.aclose()


async def test_a_failing_warning_still_comes_before_the_action(make: Any) -> None:
    """The warn callback raises on its first two calls for half the sessions. The failed
    warning waits in the outbox for its claim to lapse; the action's notice, recorded
    meanwhile (a later sweep) or in the same call (swept only after the deadline), waits
    behind it: every session's callback sees its warning, then its action, each once."""
    failing: set[str] = set()
    tries: dict[str, int] = {}
    seen: dict[str, list[str]] = {}

    async def flaky(notice: ExpiryNotice) -> None:
        if notice.kind == "warn" and notice.session_id in failing:
            tries[notice.session_id] = tries.get(notice.session_id, 0) + 1
            if tries[notice.session_id] <= 2:
                raise RuntimeError("the bot is offline")
        seen.setdefault(notice.session_id, []).append(notice.kind)

    system = await make(
        [{"policy": "idle", "after": 0.6, "action": "notify", "warn_before": 0.3}],
        expiry_notify=flaky,
        expiry_effect_lease=0.1,
    )
    sids = [(await system.create_session(f"f{i}", "u")).session_id for i in range(12)]
    failing.update(sids[::2])
    # Some are swept in the warning window first (the action comes due in a later sweep);
    # the rest only after the deadline, when one script call records warning and action.
    await _until(system, await _deadline(system, sids[0]) - 250)
    await system.cleanup_expired_sessions()
    await _until(system, max([await _deadline(system, s) for s in sids]))
    for _ in range(200):  # later sweeps deliver what waits, once each claim (0.1 s) lapsed
        await system.cleanup_expired_sessions()
        if sum(map(len, seen.values())) >= 2 * len(sids):
            break
        await asyncio.sleep(0.05)
    assert seen == {s: ["warn", "notify"] for s in sids}
    assert all(tries[s] == 3 for s in failing)  # two failures, then the one delivery
    await asyncio.sleep(0.15)
    await system.cleanup_expired_sessions()  # nothing is delivered again
    assert seen == {s: ["warn", "notify"] for s in sids}
    client, keys = system.store.client, system.store.keys
    ident = system.store.identity("f0", "u", "web")
    outbox = keys.expiry_outbox_of(system.expiry.index_of(ident))
    assert await client.exists(outbox, keys.expiry_queues_of(outbox)) == 0


async def test_outbox_claim_extend_and_ack_keep_claims_and_order(any_backend_url: str) -> None:
    """expiry_outbox.lua directly (Valkey 9 too): a notice behind an earlier one of its session
    is neither handed to the acting call nor claimed, the ack of the earlier one hands it on;
    extend keeps live claims only (never an acknowledged entry, never a lapsed claim, never
    shorter) and is safe to run twice; a retried ack drops and hands on nothing more."""
    store = await SessionStore.connect(any_backend_url, namespace=unique_namespace())
    client, script = store.client, store.scripts.expiry_outbox
    outbox = store.keys.expiry_outbox(0)
    keys = [outbox, store.keys.expiry_queues_of(outbox)]
    record = compose(  # what expiry_act.lua does for each effect it writes
        "probe", "return notice_queued(KEYS[1], KEYS[2], ARGV[1], ARGV[2]) and 1 or 0\n"
    )
    warn, act, other = "n|warn|r|900|5|web:c:u", "n|notify|r|900|5|web:c:u", "n|warn|r|7|8|t:c:u"
    archive = "f|5|web:c:u"

    async def run(*args: Any) -> Any:
        return await script.run(client, keys, [str(a) for a in args])

    try:
        # Written due at once (score 0), as if the acting process had died.
        assert [await record.run(client, keys, [e, "0"]) for e in (act, warn)] == [1, 0]
        assert await record.run(client, keys, [archive, "0"]) == 1
        assert await record.run(client, keys, [act, "0"]) == 0  # the same notice again: as is
        await client.zrem(outbox, act)  # lost (acknowledged by a process of an older version)
        assert await record.run(client, keys, [other, "0"]) == 1
        assert await record.run(client, keys, [act, "0"]) == 0  # behind warn now
        taken = await run("claim", 10, 60_000, "nf")
        assert sorted(taken) == sorted([warn.encode(), archive.encode(), other.encode()])
        now = await client.zscore(outbox, warn)
        assert await client.zscore(outbox, act) >= now - 1_000  # pushed back, not taken
        assert await run("claim", 10, 60_000, "nf") == []
        kept = await run("extend", 60_000, warn, archive, "n|notify|r|1|2|gone")
        assert sorted(kept) == sorted([warn.encode(), archive.encode()])
        assert await run("extend", 60_000, warn) == [warn.encode()]  # twice: the same
        assert await run("ack", 60_000, warn) == [1, [act.encode()]]  # handed on, claimed
        assert await client.zscore(outbox, act) >= now - 1_000
        assert await run("ack", 60_000, warn) == [0, []]  # retried: nothing more
        assert await run("extend", 60_000, warn) == []  # acknowledged: never written back
        assert await client.zscore(outbox, warn) is None
        await client.zadd(outbox, {archive: 1})  # its claim lapsed: not taken back
        assert await run("extend", 60_000, archive) == []
        assert await client.zscore(outbox, archive) == 1
        far = now + 10**7
        await client.zadd(outbox, {act: far})
        assert await run("extend", 60_000, act) == [act.encode()]
        assert await client.zscore(outbox, act) == far  # never shorter
        assert await run("ack", 60_000, act, archive, other) == [3, []]
        assert await client.exists(*keys) == 0
        with pytest.raises(ScriptError, match="unknown mode"):
            await run("drop")
    finally:
        await drop_namespace(client, store.keys.namespace)
        await store.close()


def _kind_of(system: SessionSystem) -> str:
    return "CLUSTER" if system.store.is_cluster else "REDIS"


async def test_progressive_stages_then_archive_and_merge(make: Any) -> None:
    system = await make(
        [
            {
                "name": "threads",
                "policy": "idle",
                "after": 0.3,
                "action": "merge",
                "chat_type": "thread",
            },
            {
                "name": "steps",
                "policy": "idle",
                "after": 0.3,
                "action": "progressive",
                "stages": [
                    {"after": 0, "action": "warn"},
                    {"after": 0.2, "action": "suspend"},
                    {"after": 0.4, "action": "archive"},
                ],
            },
        ]
    )
    s = await system.create_session(5, "u")
    await system.transition(s.session_id, "active")
    due = await _deadline(system, s.session_id)
    seen = []
    for offset in (0, 200, 400):
        await _until(system, due + offset)
        seen.append((await system.cleanup_expired_sessions()).actions)
    assert seen == [{"warn": 1}, {"suspend": 1}, {"archive": 1}]
    restored = await system.restore_archived(s.session_id)
    assert restored.state == "suspended"
    assert [a for t, a in await _events(system, s.session_id) if t == "expired"] == [
        "warn",
        "suspend",
        "archive",
    ]
    old = await system.create_session(6, "u", thread_id="t1", data={"a": 1, "b": 1})
    await _until(system, round(old.created_at.timestamp() * 1000) + 1)  # newer: a later ms
    newer = await system.create_session(6, "u", thread_id="t2", data={"b": 2})
    old_due = await _deadline(system, old.session_id)
    await _until(system, old_due - 100)
    await system.touch_session(newer.session_id)  # newer stays alive past old's deadline
    await _until(system, old_due)
    await system.cleanup_expired_sessions()
    merged = await system.store.find_by_id(newer.session_id)
    assert merged is not None and merged.data == {"a": 1, "b": 2}  # newer wins, old adds
    assert await system.store.find_by_id(old.session_id) is None


async def test_two_stages_with_the_same_action_are_two_notices(make: Any) -> None:
    """Two warnings of one progressive rule reach the callback as two notices (their own
    notice ids), whether the first was acknowledged before the second came due or not."""
    notices: list[ExpiryNotice] = []

    async def record(notice: ExpiryNotice) -> None:
        notices.append(notice)

    stages = [
        {"after": 0, "action": "warn"},
        {"after": 0.2, "action": "warn"},
        {"after": 0.4, "action": "archive"},
    ]
    system = await make(
        [{"policy": "idle", "after": 0.3, "action": "progressive", "stages": stages}],
        expiry_notify=record,
    )
    apart = await system.create_session("apart", "u")  # swept at each stage
    late = await system.create_session("late", "u")  # swept once: every stage in one call
    await _until(system, await _deadline(system, apart.session_id))
    await system.cleanup_expired_sessions()
    await _until(system, await _deadline(system, apart.session_id) + 200)
    await system.cleanup_expired_sessions()
    deadlines = [await _deadline(system, s.session_id) for s in (apart, late)]
    await _until(system, max(deadlines) + 400)
    await system.cleanup_expired_sessions()
    for s in (apart, late):
        mine = [n for n in notices if n.session_id == s.session_id]
        assert [n.kind for n in mine] == ["warn", "warn"]
        assert len({n.notice_id for n in mine}) == 2
    assert (await system.get_statistics()).expiry_actions == {"warn": 4, "archive": 2}


async def test_custom_sync_and_async_policies(make: Any) -> None:
    async def flagged(session: Any) -> bool:
        return bool(session.metadata.get("flagged"))

    system = await make(
        [
            {
                "name": "vip",
                "policy": "custom",
                "func": lambda s: s.priority > 5,
                "action": "delete",
                "min_priority": 1,
            },
            {
                "name": "flag",
                "policy": "custom",
                "func": flagged,
                "action": "delete",
                "recheck": 0.2,
            },
        ]
    )
    a = await system.create_session(8, "u", metadata={"flagged": False})
    b = await system.create_session(9, "u", metadata={"flagged": True})
    info = await system.get_expiry_info(b.session_id)
    assert info is not None and info.rule == "flag" and info.action == "delete"
    await _until(system, await _deadline(system, b.session_id))
    assert (await system.cleanup_expired_sessions()).actions == {"delete": 1}
    assert await system.store.find_by_id(a.session_id) is not None
    assert await system.store.find_by_id(b.session_id) is None


# -- archive ----------------------------------------------------------------------------------


async def test_archive_then_restore_returns_an_equal_session(make: Any, tmp_path: Path) -> None:
    system = await make(
        [{"policy": "idle", "after": 0.3, "action": "archive"}],
        archive_dir=str(tmp_path / "archive"),
        default_ttl=2.0,
    )
    s = await system.create_session(
        10, "u", data={"k": [1, 2], "t": "x"}, metadata={"m": 1}, priority=3
    )
    await system.transition(s.session_id, "active")
    await system.update_session(s.session_id, data={"k": [1, 2, 3]})
    await system.track_event(s.session_id, "message_received", text="hello")
    before = await system.store.get(s.session_id)
    events_before = await system.get_events(s.session_id)
    await _until(system, await _deadline(system, s.session_id))
    assert (await system.cleanup_expired_sessions()).actions == {"archive": 1}
    [archived] = await system.list_archived()
    assert archived.in_redis and archived.file is not None and Path(archived.file).exists()
    ident, created = split_archive_id(archived.archive_id)
    key = system.store.keys.archive(ident, created)
    assert await system.store.client.pttl(key) > 2000  # out of the live TTL: the retention
    restored = await system.restore_archived(s.session_id)
    for name in ("data", "metadata", "state", "version", "priority", "message_count", "created_at"):
        assert getattr(restored, name) == getattr(before, name), name
    events_after = await system.get_events(s.session_id)
    assert [e.event_id for e in events_after[: len(events_before)]] == [
        e.event_id for e in events_before
    ]
    assert [(e.type, e.fields.get("action")) for e in events_after[len(events_before) :]] == [
        ("expired", "archive")
    ]
    assert await system.list_archived() == []
    with pytest.raises(ValidationError):
        await system.restore_archived(s.session_id)


async def test_restore_from_the_archive_file_after_the_redis_copy_is_gone(
    make: Any, tmp_path: Path
) -> None:
    system = await make(
        [{"policy": "idle", "after": 0.2, "action": "archive"}], archive_dir=str(tmp_path)
    )
    s = await system.create_session(11, "u", data={"v": 1})
    await _until(system, await _deadline(system, s.session_id))
    await system.cleanup_expired_sessions()
    [archived] = await system.list_archived("u")
    ident, created = split_archive_id(archived.archive_id)
    await system.store.client.delete(
        system.store.keys.archive(ident, created),
        system.store.keys.archive_events(ident, created),
    )  # the retention passed in Redis
    restored = await system.restore_archived(s.session_id, archive_id=archived.archive_id)
    assert restored.data == {"v": 1}


async def test_a_session_mid_turn_is_left_alone_until_the_turn_ends(make: Any) -> None:
    system = await make([{"policy": "idle", "after": 0.2, "action": "archive"}])
    s = await system.create_session(12, "u")
    async with system.turns.turn(s.session_id):
        await _until(system, await _deadline(system, s.session_id))
        assert (await system.cleanup_expired_sessions()).actions == {}
        assert await system.store.find_by_id(s.session_id) is not None
    # Told to come back after the turn: the entry now waits TURN_RETRY_MS.
    from sessioncache.expiry.engine import TURN_RETRY_MS

    await _until(system, await system.expiry._now() + TURN_RETRY_MS + 10)
    assert (await system.cleanup_expired_sessions()).actions == {"archive": 1}


async def test_restores_arm_the_expiry_index_again(make: Any, tmp_path: Path) -> None:
    """A backup restore and an archive restore each put the session back in the expiry index
    in the restoring script itself (no later arm() needed), so the sweep sees it again."""
    from sessioncache.persistence import Persistence

    system = await make([{"name": "idle", "policy": "idle", "after": 60, "action": "archive"}])
    client = system.store.client
    s = await system.create_session(20, "u", data={"v": 1})
    ident = system.store.identity(20, "u", "web")
    key, index = system.store.keys.session(ident), system.expiry.index_of(ident)
    assert await client.zscore(index, key) is not None
    persistence = Persistence(system.store, backup_dir=tmp_path / "backups", key="k" * 32)
    try:
        backup_id = await persistence.create_backup()
        await system.store.client.zrem(index, key)  # and the replace wipes the index anyway
        report = await persistence.restore_backup(backup_id, "replace")
        assert report.written == 1
        due = await _deadline(system, s.session_id)
        assert await client.zscore(index, key) == due
    finally:
        await persistence.changes.disarm()
    # Archive, then the restore script alone (restore_archived re-picks the rule after it).
    created = round(s.created_at.timestamp() * 1000)
    assert await system.expiry.act(ident, created, system.expiry.by_name["idle"], "now") == [
        "archive"
    ]
    assert await client.zscore(index, key) is None
    restored = await system.expiry.archive.restore(f"{s.session_id}#{created}")
    assert restored.data == {"v": 1}
    due = await _deadline(system, s.session_id)
    assert await client.zscore(index, key) == due > await system.expiry._now()
    # Archived again, then the whole restore_archived.
    await system.expiry.act(ident, created, system.expiry.by_name["idle"], "now")
    back = await system.restore_archived(s.session_id)
    assert await client.zscore(index, key) == await _deadline(system, back.session_id)


async def test_merge_looks_again_when_its_target_changed(make: Any) -> None:
    """The acting script refuses a merge target that is gone or not the one the caller saw
    (nothing written); the engine looks for it again and merges in one call."""
    system = await make([{"name": "threads", "policy": "idle", "after": 60, "action": "merge"}])
    old = await system.create_session(30, "u", thread_id="t1", data={"a": 1})
    await _until(system, round(old.created_at.timestamp() * 1000) + 1)
    newer = await system.create_session(30, "u", thread_id="t2", data={"b": 2})
    real = system.expiry._merge_target
    seen: list[int] = []

    async def stale(ident: Any, created_ms: int) -> Any:
        found = await real(ident, created_ms)
        seen.append(1)
        return (found[0], found[1] + 1) if len(seen) == 1 else found  # first: a stale view

    system.expiry._merge_target = stale
    ident = system.store.identity(30, "u", "web", "t1")
    created = round(old.created_at.timestamp() * 1000)
    assert await system.expiry.act(ident, created, system.expiry.by_name["threads"], "now") == [
        "merge"
    ]
    assert len(seen) == 2
    merged = await system.store.find_by_id(newer.session_id)
    assert merged is not None and merged.data == {"a": 1, "b": 2}
    assert merged.version == newer.version + 1
    assert await system.store.find_by_id(old.session_id) is None
    assert (await system.get_statistics()).expiry_actions == {"merge": 1}


async def test_expiry_suspend_is_seen_by_incremental_backups(make: Any, tmp_path: Path) -> None:
    """transition.lua marks a state change in the change bucket (session_written); the
    suspend that expiry_act.lua now does itself (lib/transit.lua) never calls mark_changed
    when the session stays, so an incremental backup misses the suspended state."""
    from sessioncache.persistence import Persistence

    system = await make([{"name": "idle", "policy": "idle", "after": 0.2, "action": "suspend"}])
    persistence = Persistence(system.store, backup_dir=tmp_path / "b", key="k" * 32)
    await persistence.changes.arm()
    try:
        s = await system.create_session(40, "u")
        await system.transition(s.session_id, "active")
        ident = system.store.identity(40, "u", "web")
        key = system.store.keys.session(ident)
        bucket = system.store.keys.change_bucket_of(ident)
        client = system.store.client
        assert await client.zscore(bucket, key) is not None  # control: transition marks it
        await client.zrem(bucket, key)  # forget the create/transition marks
        await _until(system, await _deadline(system, s.session_id))
        assert (await system.cleanup_expired_sessions()).actions == {"suspend": 1}
        assert (await system.store.get(s.session_id)).state == "suspended"
        assert await client.zscore(bucket, key) is not None, "suspend not in change index"
    finally:
        await persistence.changes.disarm()


async def test_archive_file_effect_not_acked_by_a_process_without_archive_dir(
    make: Any, tmp_path: Path
) -> None:
    """Process A (archive_dir set) archives a session and dies before delivering its outbox
    entry "f|...". Any other process's sweep drains it: Effects._one calls
    Archive.write_file, which returns None at once when *that* process has no archive_dir,
    and deliver() acks it: the archive file is never written and the entry is gone."""
    adir = tmp_path / "archive"
    system = await make(
        [{"name": "idle", "policy": "idle", "after": 0.2, "action": "archive"}],
        archive_dir=str(adir),
        expiry_effect_lease=0.05,
    )

    async def crashed(outbox: str, entries: Any) -> int:  # A dies between script and effect
        return 0

    system.expiry.effects.deliver = crashed  # type: ignore[method-assign]
    s = await system.create_session(41, "u", data={"v": 1})
    await _until(system, await _deadline(system, s.session_id))
    assert (await system.cleanup_expired_sessions()).actions == {"archive": 1}
    ident = system.store.identity(41, "u", "web")
    outbox = system.store.keys.expiry_outbox_of(system.expiry.index_of(ident))
    assert await system.store.client.zcard(outbox) == 1
    # Another process of the fleet (e.g. `sessioncache expire` without --archive-dir).
    other = ExpiryEngine(
        system.store, system.expiry.tracker, system.expiry.rules, effect_lease=0.05
    )
    await _until(system, await system.expiry._now() + 100)  # A's claim lapsed
    await other.sweep()
    [archived] = await system.list_archived()
    pending = await system.store.client.zcard(outbox)
    assert pending == 1 or (archived.file is not None and Path(archived.file).exists()), (
        "archive file effect acknowledged without the file being written"
    )


async def test_merge_keeps_the_target_within_max_fields(make: Any) -> None:
    """update.lua refuses a write that takes a session past Limits.max_fields; the merge in
    expiry_act.lua HSETNXes every data field of the old session into the target with no
    count check, so the target ends up holding more fields than any write may give it."""
    from sessioncache.codec import Limits

    system = await make(
        [{"name": "threads", "policy": "idle", "after": 60, "action": "merge"}],
        limits=Limits(max_fields=4),
    )
    old = await system.create_session(42, "u", thread_id="t1", data={f"o{i}": i for i in range(4)})
    await _until(system, round(old.created_at.timestamp() * 1000) + 1)
    newer = await system.create_session(
        42, "u", thread_id="t2", data={f"n{i}": i for i in range(4)}
    )
    ident = system.store.identity(42, "u", "web", "t1")
    created = round(old.created_at.timestamp() * 1000)
    await system.expiry.act(ident, created, system.expiry.by_name["threads"], "now")
    merged = await system.store.find_by_id(newer.session_id)
    assert merged is not None
    assert len(merged.data) + len(merged.metadata) <= 4, merged.data
    assert merged.data == {f"n{i}": i for i in range(4)}  # all or nothing: nothing copied
    kept = await system.store.find_by_id(old.session_id)  # as a merge with no target: kept
    assert kept is not None and kept.data == {f"o{i}": i for i in range(4)}


async def test_restored_session_is_not_expired_again_at_once(make: Any) -> None:
    """archive_restore.lua keeps field x (the fixed deadline) and arms the index from it, and
    restore_archived's arm() recomputes x from created_ms (absolute: created + after; daily:
    next_boundary(created)). Both are in the past for a session that was archived by such a
    rule, so the restored session is due at once: the next sweep archives it again."""
    system = await make([{"name": "age", "policy": "absolute", "after": 0.3, "action": "archive"}])
    s = await system.create_session(43, "u", data={"v": 1})
    await _until(system, await _deadline(system, s.session_id))
    assert (await system.cleanup_expired_sessions()).actions == {"archive": 1}
    restored = await system.restore_archived(s.session_id)
    assert restored.data == {"v": 1}
    assert (await system.cleanup_expired_sessions()).actions == {}
    assert await system.store.find_by_id(s.session_id) is not None


async def test_sweep_drop_of_a_stale_entry_spares_a_session_recreated_meanwhile(
    make: Any,
) -> None:
    """sweep._one reads (c, y) in a pipeline and, finding the session gone, drops its index
    entry with a bare ZREM (_drop) rather than in a script that re-checks. A session created
    again under the same key between the read and the ZREM (get_or_create after a key-TTL
    expiry) loses its entry: its idle rule never fires by sweep."""
    system = await make([{"name": "idle", "policy": "idle", "after": 0.2, "action": "archive"}])
    s = await system.create_session(44, "u")
    ident = system.store.identity(44, "u", "web")
    key, index = system.store.keys.session(ident), system.expiry.index_of(ident)
    await _until(system, await _deadline(system, s.session_id))
    await system.store.client.delete(key)  # the key TTL backstop took it; the entry stays
    real = system.expiry._drop

    async def racing(ident_: Any, key_: str) -> None:
        await system.create_session(44, "u")  # a new message: the session is back, armed
        await real(ident_, key_)

    system.expiry._drop = racing  # type: ignore[method-assign]
    await system.cleanup_expired_sessions()
    assert await system.store.find_by_id(s.session_id) is not None
    assert await system.store.client.zscore(index, key) is not None, "new session unindexed"


async def test_restored_daily_session_waits_for_the_next_boundary(make: Any) -> None:
    """A session created a day ago, archived at a boundary (scaled down: 0.3 s ahead stands
    for 04:00); restored, it is armed for the next 04:00 after the restore, not for the first
    boundary after its creation, which has passed."""
    system = await make([{"policy": "daily", "at": "04:00", "tz": "UTC", "action": "archive"}])
    s = await system.create_session(46, "u", data={"v": 1})
    ident = system.store.identity(46, "u", "web")
    key = system.store.keys.session(ident)
    now = await system.expiry._now()
    await system.store.client.hset(key, "c", str(now - 86_400_000))  # created a day ago
    boundary = now + 300
    await system.store.scripts.expiry_arm.run(
        system.store.client,
        [key, system.expiry.index_of(ident)],
        [str(boundary), ExpirySpec("rule0", fixed=boundary).field_y(), ""],
    )
    await _until(system, boundary + 1)
    assert (await system.cleanup_expired_sessions()).actions == {"archive": 1}
    restored = await system.restore_archived(s.session_id)
    now = await system.expiry._now()
    assert restored.data == {"v": 1}
    assert (await system.cleanup_expired_sessions()).actions == {}
    info = await system.get_expiry_info(s.session_id)
    assert info is not None and info.deadline_ms is not None
    assert now < info.deadline_ms <= now + 86_400_000
    assert dt.datetime.fromtimestamp(info.deadline_ms / 1000, dt.UTC).strftime("%H:%M") == "04:00"


async def test_a_suspend_the_state_table_forbids_is_neither_counted_nor_recorded(
    make: Any,
) -> None:
    """A closed session may not move to suspended: the suspend stage passes applied to
    nothing (no x:suspend, no "expired suspend" event, the state unchanged, the deadline
    spent)."""
    system = await make([{"policy": "idle", "after": 0.2, "action": "suspend"}])
    s = await system.create_session(47, "u")
    await system.transition(s.session_id, "closed")
    await _until(system, await _deadline(system, s.session_id))
    assert (await system.cleanup_expired_sessions()).actions == {}
    after = await system.store.find_by_id(s.session_id)
    assert after is not None and after.state == "closed"
    assert (await system.get_statistics()).expiry_actions == {}
    assert ("expired", "suspend") not in await _events(system, s.session_id)
    info = await system.get_expiry_info(s.session_id)
    assert info is not None and info.armed and info.spent  # till the session is active again
    assert await _index_score(system, s.session_id) is None  # the next sweep does not look
    assert (await system.cleanup_expired_sessions()).actions == {}


# -- a restore starts a new period for usage and custom rules ---------------------------------


async def _archived_once(system: SessionSystem, sid: str) -> None:
    assert (await system.cleanup_expired_sessions()).actions == {"archive": 1}
    assert await system.store.find_by_id(sid) is None
    assert (await system.get_statistics()).expiry_actions == {"archive": 1}


async def _restore_equal(system: SessionSystem, sid: str, before: Any, events: Any) -> Any:
    """restore_archived, checked to bring back what was archived (data, metadata, state,
    version, message count, events)."""
    restored = await system.restore_archived(sid)
    for name in ("data", "metadata", "state", "version", "priority", "message_count", "created_at"):
        assert getattr(restored, name) == getattr(before, name), name
    after = await system.get_events(sid)
    assert [(e.event_id, e.type, e.fields) for e in after[: len(events)]] == [
        (e.event_id, e.type, e.fields) for e in events
    ]
    assert [(e.type, e.fields.get("action")) for e in after[len(events) :]] == [
        ("expired", "archive")
    ]
    read = await system.store.find_by_id(sid)
    assert read == restored  # the period's record (field b) is not data
    return restored


async def _still_live(system: SessionSystem, restored: Any) -> None:
    now = await system.store.find_by_id(restored.session_id)
    assert now is not None and now.created_at == restored.created_at
    assert now.data == restored.data


USAGE_RULES = {
    "messages": {"policy": "usage", "messages": 3},
    "hybrid": {
        "policy": "hybrid",
        "any": [{"policy": "usage", "messages": 3}, {"policy": "idle", "after": 3600}],
    },
    "hybrid-python": {  # decided in Python (a custom part): the usage part counts the same
        "policy": "hybrid",
        "any": [
            {"policy": "usage", "messages": 3},
            {"policy": "custom", "func": lambda s: False, "recheck": 0.2},
        ],
    },
}


@pytest.mark.parametrize("shape", list(USAGE_RULES))
async def test_a_restored_usage_session_counts_messages_from_the_restore(
    make: Any, shape: str
) -> None:
    """Archived at N messages, restored whole: the next access, touch and sweep leave it be,
    and it is archived again (once) after N more messages, not at its next write."""
    system = await make([{"name": "use", "action": "archive", **USAGE_RULES[shape]}])
    python = shape == "hybrid-python"
    s = await system.create_session(50, "u", data={"v": 1}, metadata={"m": 2})
    await system.transition(s.session_id, "active")
    await system.track_event(s.session_id, "message_sent", text="hi")  # a message counted
    for _ in range(2):
        await system.touch_session(s.session_id, messages=1)
    before = await system.store.get(s.session_id)
    events = await system.get_events(s.session_id)
    assert before.message_count == 3
    if python:
        await _until(system, await _deadline(system, s.session_id))
    await _archived_once(system, s.session_id)
    restored = await _restore_equal(system, s.session_id, before, events)
    if python:
        await _until(system, await _deadline(system, s.session_id))
    assert (await system.cleanup_expired_sessions()).actions == {}
    await system.touch_session(s.session_id)  # access without a message
    assert await system.get_session(s.session_id) == await system.store.find_by_id(s.session_id)
    await system.get_or_create_session(50, "u")
    for _ in range(2):
        await system.touch_session(s.session_id, messages=1)
        if python:
            await _until(system, await _deadline(system, s.session_id))
        assert (await system.cleanup_expired_sessions()).actions == {}
    await _still_live(system, restored)
    assert (await system.get_statistics()).expiry_actions == {"archive": 1}
    await system.touch_session(s.session_id, messages=1)  # the 3rd since the restore
    if python:
        await _until(system, await _deadline(system, s.session_id))
    assert (await system.cleanup_expired_sessions()).actions == {"archive": 1}
    assert await system.store.find_by_id(s.session_id) is None
    assert (await system.cleanup_expired_sessions()).actions == {}
    assert (await system.get_statistics()).expiry_actions == {"archive": 2}


async def test_a_restored_session_over_its_limit_is_not_archived_by_its_next_message(
    make: Any,
) -> None:
    """The write that would pass the limit decides on access: after a restore the session's
    next message goes into the restored session, not into a successor."""
    system = await make([{"name": "use", "policy": "usage", "messages": 2, "action": "archive"}])
    s = await system.create_session(51, "u", data={"v": 1})
    for _ in range(3):  # the 3rd: the rule applies first, the message goes to a successor
        await system.touch_session(s.session_id, messages=1)
    assert (await system.get_statistics()).expiry_actions == {"archive": 1}
    successor = await system.store.find_by_id(s.session_id)
    assert successor is not None and successor.message_count == 1
    await system.delete_session(s.session_id)
    restored = await system.restore_archived(s.session_id)
    assert restored.message_count == 2 and restored.data == {"v": 1}
    await system.touch_session(s.session_id, messages=1)
    after = await system.store.find_by_id(s.session_id)
    assert after is not None and after.created_at == restored.created_at
    assert after.message_count == 3 and after.data == {"v": 1}
    assert (await system.get_statistics()).expiry_actions == {"archive": 1}
    await system.touch_session(s.session_id, messages=1)  # 2 since the restore: due now
    await system.touch_session(s.session_id, messages=1)  # the 3rd: archived, a successor
    assert (await system.get_statistics()).expiry_actions == {"archive": 2}
    fresh = await system.store.find_by_id(s.session_id)
    assert fresh is not None and fresh.created_at > restored.created_at and fresh.data == {}


async def test_a_restored_token_budget_counts_tokens_from_the_restore(make: Any) -> None:
    system = await make(
        [
            {
                "name": "budget",
                "policy": "usage",
                "tokens": 100,
                "recheck": 0.2,
                "action": "archive",
            }
        ]
    )
    s = await system.create_session(52, "u", data={"v": 1}, metadata={"tokens": 40})
    await system.update_session(s.session_id, metadata={"tokens": 150})
    before = await system.store.get(s.session_id)
    events = await system.get_events(s.session_id)
    await _until(system, await _deadline(system, s.session_id))
    await _archived_once(system, s.session_id)
    restored = await _restore_equal(system, s.session_id, before, events)
    assert restored.metadata == {"tokens": 150}
    await _until(system, await _deadline(system, s.session_id))
    assert (await system.cleanup_expired_sessions()).actions == {}
    await system.update_session(s.session_id, metadata={"tokens": 249})  # 99 since the restore
    await _until(system, await _deadline(system, s.session_id))
    assert (await system.cleanup_expired_sessions()).actions == {}
    await _still_live(system, restored)
    await system.update_session(s.session_id, metadata={"tokens": 250})
    await _until(system, await _deadline(system, s.session_id))
    assert (await system.cleanup_expired_sessions()).actions == {"archive": 1}
    assert await system.store.find_by_id(s.session_id) is None
    assert (await system.get_statistics()).expiry_actions == {"archive": 2}


async def test_a_restored_custom_rule_waits_for_activity_after_the_restore(make: Any) -> None:
    """A custom callable sees the same session after a restore as before the archive: it is
    not asked again until the session is active after the restore (then as usual)."""
    calls: list[str] = []

    def flagged(session: Any) -> bool:
        calls.append(session.session_id)
        return bool(session.metadata.get("flagged"))

    system = await make(
        [
            {
                "name": "flag",
                "policy": "custom",
                "func": flagged,
                "recheck": 0.2,
                "action": "archive",
            }
        ]
    )
    s = await system.create_session(53, "u", data={"v": 1}, metadata={"flagged": True})
    before = await system.store.get(s.session_id)
    events = await system.get_events(s.session_id)
    await _until(system, await _deadline(system, s.session_id))
    await _archived_once(system, s.session_id)
    restored = await _restore_equal(system, s.session_id, before, events)
    asked = len(calls)
    for _ in range(2):
        await _until(system, await _deadline(system, s.session_id))
        assert (await system.cleanup_expired_sessions()).actions == {}
    assert len(calls) == asked  # not asked: nothing happened since the restore
    await _still_live(system, restored)
    await _until(system, round(restored.last_activity.timestamp() * 1000) + 1)
    await system.touch_session(s.session_id)  # active again: the callable decides
    await _until(system, await _deadline(system, s.session_id))
    assert (await system.cleanup_expired_sessions()).actions == {"archive": 1}
    assert len(calls) == asked + 1
    assert (await system.get_statistics()).expiry_actions == {"archive": 2}


async def test_a_backup_restore_keeps_the_period_of_a_restored_session(
    make: Any, tmp_path: Path
) -> None:
    """A backup of a session restored from its archive brings back the period it was in:
    restored from the backup, it is not due, and its limit still counts from the restore."""
    from sessioncache.persistence import Persistence

    system = await make([{"name": "use", "policy": "usage", "messages": 2, "action": "archive"}])
    s = await system.create_session(54, "u", data={"v": 1})
    for _ in range(2):
        await system.touch_session(s.session_id, messages=1)
    await _archived_once(system, s.session_id)
    await system.restore_archived(s.session_id)
    await system.touch_session(s.session_id, messages=1)  # 1 since the restore
    persistence = Persistence(system.store, backup_dir=tmp_path / "backups", key="k" * 32)
    try:
        backup_id = await persistence.create_backup()
        report = await persistence.restore_backup(backup_id, "replace")
        assert report.written == 1
    finally:
        await persistence.changes.disarm()
    back = await system.store.find_by_id(s.session_id)
    assert back is not None and back.message_count == 3 and back.data == {"v": 1}
    assert (await system.cleanup_expired_sessions()).actions == {}
    await system.touch_session(s.session_id, messages=1)  # the 2nd since the archive restore
    assert (await system.cleanup_expired_sessions()).actions == {"archive": 1}


async def test_a_priority_change_picks_the_rule_again_in_the_same_period(make: Any) -> None:
    """Rules match by priority: update_session(priority=...) re-picks the session's rule (its
    period kept: an absolute age still counts from the creation); a re-pick for a priority
    changed again since leaves the rule to the newer one."""
    system = await make(
        [
            {
                "name": "vip",
                "policy": "idle",
                "after": 3600,
                "action": "archive",
                "min_priority": 5,
            },
            {"name": "short", "policy": "absolute", "after": 0.6, "action": "archive"},
        ]
    )
    s = await system.create_session("p", "u")
    first = await system.get_expiry_info(s.session_id)
    assert first is not None and first.rule == "short"
    raised = await system.update_session(s.session_id, {"a": 1}, priority=7)
    info = await system.get_expiry_info(s.session_id)
    assert info is not None and info.rule == "vip"
    await _until(system, first.deadline_ms or 0)
    assert (await system.cleanup_expired_sessions()).actions == {}
    # A re-pick computed for priority 7 arriving after a change back to 0 changes nothing.
    await system.update_session(s.session_id, {"a": 2}, priority=0)
    again = await system.get_expiry_info(s.session_id)
    assert again is not None and again.rule == "short"
    assert again.deadline_ms == first.deadline_ms  # same period: from the creation
    await system.expiry.arm(raised, repick=True)
    still = await system.get_expiry_info(s.session_id)
    assert still is not None and still.rule == "short"
    assert (await system.cleanup_expired_sessions()).actions == {"archive": 1}
    assert (await system.get_statistics()).expiry_actions == {"archive": 1}


# -- a rule spent with the session in place fires once per deadline --------------------------


def _recorder() -> tuple[list[str], Any]:
    kinds: list[str] = []

    async def record(notice: ExpiryNotice) -> None:
        kinds.append(notice.kind)

    return kinds, record


async def _index_score(system: SessionSystem, sid: str) -> float | None:
    ident = parse_session_id(sid)
    key = system.store.keys.session(ident)
    score = await system.store.client.zscore(system.expiry.index_of(ident), key)
    return None if score is None else float(score)


@pytest.mark.parametrize("action", ["notify", "suspend"])
async def test_an_idle_rule_that_leaves_the_session_fires_once_per_idle_gap(
    make: Any, action: str
) -> None:
    """Idle + notify (or suspend): one action at the first idle gap; the user coming back
    (get_or_create, then a message) gets no second one and stays in the same session; the
    next idle gap gives exactly one more."""
    kinds, record = _recorder()
    system = await make([{"policy": "idle", "after": 1.0, "action": action}], expiry_notify=record)
    s = await system.get_or_create_session(60, "u")
    await _until(system, await _deadline(system, s.session_id))
    assert (await system.cleanup_expired_sessions()).actions == {action: 1}
    assert await _index_score(system, s.session_id) is None  # spent for this deadline
    info = await system.get_expiry_info(s.session_id)
    assert info is not None and info.armed and info.spent
    assert (await system.cleanup_expired_sessions()).actions == {}
    back = await system.get_or_create_session(60, "u")
    assert (back.session_id, back.created_at) == (s.session_id, s.created_at)
    if action == "suspend":
        assert back.state == "suspended"
        await system.transition(back.session_id, "active")  # the bot takes it up again
    await system.touch_session(back.session_id, messages=1)
    assert (await system.cleanup_expired_sessions()).actions == {}
    # Nothing slow before the next deadline (statistics take a second on a cluster): the
    # counts after it show that nothing acted in between.
    after = await system.store.find_by_id(s.session_id)
    assert after is not None and after.created_at == s.created_at and after.message_count == 1
    await _until(system, await _deadline(system, s.session_id))  # the next idle gap
    assert (await system.cleanup_expired_sessions()).actions == {action: 1}
    assert (await system.cleanup_expired_sessions()).actions == {}
    assert (await system.get_statistics()).expiry_actions == {action: 2}
    assert kinds == (["notify", "notify"] if action == "notify" else [])
    last = await system.get_session(s.session_id)
    assert last is not None and last.created_at == s.created_at


async def test_a_message_limit_that_leaves_the_session_fires_once_per_n_messages(
    make: Any,
) -> None:
    """usage messages=2 + notify: one notice at message 2 (by the sweep), none for message 3
    or the next get_or_create, one more at message 4 (here by the write after it)."""
    kinds, record = _recorder()
    system = await make(
        [{"policy": "usage", "messages": 2, "action": "notify"}], expiry_notify=record
    )
    s = await system.get_or_create_session(61, "u")
    for _ in range(2):
        await system.touch_session(s.session_id, messages=1)
    assert (await system.cleanup_expired_sessions()).actions == {"notify": 1}
    await system.touch_session(s.session_id, messages=1)  # message 3
    assert (await system.cleanup_expired_sessions()).actions == {}
    # The limit moved on as arm() gives it in the period the session is in (field b: the
    # messages at the spend, its start empty: the period still began at creation).
    stored = await system.store.find_by_id(s.session_id)
    assert stored is not None and stored._expiry is not None
    created_ms = round(s.created_at.timestamp() * 1000)
    assert Period.of(stored) == Period(created_ms, 2)
    spec = system.expiry.spec(system.expiry.rules[0], stored, 0)
    assert spec is not None and spec.limit == 4
    assert spec.field_y() == stored._expiry[1].decode()
    back = await system.get_or_create_session(61, "u")
    assert (back.session_id, back.created_at) == (s.session_id, s.created_at)
    assert (await system.get_statistics()).expiry_actions == {"notify": 1}
    await system.touch_session(s.session_id, messages=1)  # message 4: the limit again
    await system.touch_session(s.session_id, messages=1)  # message 5: notified first
    assert (await system.get_statistics()).expiry_actions == {"notify": 2}
    assert (await system.cleanup_expired_sessions()).actions == {}
    await system.touch_session(s.session_id, messages=1)  # message 6: the limit again
    assert (await system.cleanup_expired_sessions()).actions == {"notify": 1}
    assert (await system.get_statistics()).expiry_actions == {"notify": 3}
    assert kinds == ["notify"] * 3
    now = await system.get_session(s.session_id)
    assert now is not None and now.created_at == s.created_at and now.message_count == 6


async def test_an_absolute_rule_that_leaves_the_session_fires_once(make: Any) -> None:
    kinds, record = _recorder()
    system = await make(
        [{"policy": "absolute", "after": 0.3, "action": "notify"}], expiry_notify=record
    )
    s = await system.get_or_create_session(62, "u")
    await _until(system, await _deadline(system, s.session_id))
    assert (await system.cleanup_expired_sessions()).actions == {"notify": 1}
    back = await system.get_or_create_session(62, "u")
    assert (back.session_id, back.created_at) == (s.session_id, s.created_at)
    for _ in range(3):
        await system.touch_session(s.session_id, messages=1)
        await system.update_session(s.session_id, {"n": 1})
        await system.track_event(s.session_id, "message_received", text="hi")
    assert (await system.cleanup_expired_sessions()).actions == {}
    assert (await system.get_statistics()).expiry_actions == {"notify": 1}
    assert kinds == ["notify"]


async def test_a_daily_rule_that_leaves_the_session_fires_once_per_boundary(make: Any) -> None:
    """Daily + notify: once the boundary's notice is out, the rule waits for the next
    boundary (x re-armed in the same call), not for none, and not for the spent one."""
    kinds, record = _recorder()
    system = await make(
        [{"policy": "daily", "at": "04:00", "tz": "UTC", "action": "notify"}],
        expiry_notify=record,
    )
    s = await system.get_or_create_session(63, "u")
    ident = parse_session_id(s.session_id)
    key = system.store.keys.session(ident)
    soon = await system.expiry._now() + 300
    await system.store.client.hset(key, "x", str(soon))  # as if a boundary were near
    await system.touch_session(s.session_id)  # the write indexes the session at it
    await _until(system, soon)
    assert (await system.cleanup_expired_sessions()).actions == {"notify": 1}
    now = await system.expiry._now()
    x = int(await system.store.client.hget(key, "x"))
    assert now < x <= now + 86_400_000
    assert dt.datetime.fromtimestamp(x / 1000, dt.UTC).strftime("%H:%M") == "04:00"
    assert await _index_score(system, s.session_id) == x
    await system.touch_session(s.session_id, messages=1)
    assert (await system.cleanup_expired_sessions()).actions == {}
    assert (await system.get_statistics()).expiry_actions == {"notify": 1}
    assert kinds == ["notify"]
