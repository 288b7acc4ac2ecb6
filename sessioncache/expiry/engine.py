"""ExpiryEngine: arms rules on sessions, decides on access, sweeps the expiry index, acts once.

Scripts do the deciding (lib/expiry.lua): the write scripts refuse new activity on a session
past its deadline (SessionExpired) and keep the per-slot expiry index; expiry_act.lua re-checks
the deadline and applies each due stage once (archive and delete end the session in the same
call). This module chooses the rule, runs the sweep in bounded batches once per interval across
the fleet (fleet.py), and delivers what Redis cannot do from the outbox the acting script
writes (effects.py: the notify callback, the archive file).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from ..codec import encode_value
from ..errors import BackendUnavailable, ValidationError
from ..fleet import FleetJob
from ..identity import Identity, parse_session_id
from ..models import Session
from ..store import SessionStore
from .archive import Archive
from .effects import Effects, Notify
from .policies import Daily, ExpirySpec, Period, due_at, past_due, stages_done
from .report import ExpiryInfo
from .rules import Rule, first_match
from .sweep import SweepMethods

log = logging.getLogger(__name__)

RECENT_MS = 60_000
"""A write that finds no session within this long after expiry archived it goes to the
session that follows (another process is creating it)."""

TURN_RETRY_MS = 1000
"""How long a sweep waits before looking again at a session whose turn is in progress."""

MERGE_RETRIES = 3
"""How often acting looks for a merge target again when the one it found went away."""


def _ms(value: Any) -> int:
    return round(float(value.timestamp()) * 1000)


class ExpiryEngine(SweepMethods):
    """The expiry rules of one SessionSystem (see docs/expiry.md)."""

    def __init__(
        self,
        store: SessionStore,
        tracker: Any,
        rules: Sequence[Rule],
        *,
        archive_dir: str | os.PathLike[str] | None = None,
        archive_retention: float = 30 * 86400.0,
        interval: float = 60.0,
        batch_size: int = 100,
        max_per_sweep: int = 1_000_000,
        notify: Notify | None = None,
        lease_ttl: float = 30.0,
        effect_lease: float = 30.0,
    ) -> None:
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or not 1 <= batch_size <= 1000
        ):
            raise ValidationError(
                f"expiry batch_size must be an int in [1, 1000], got {batch_size!r}"
            )
        if (
            isinstance(archive_retention, bool)
            or not isinstance(archive_retention, (int, float))
            or not 1 <= archive_retention <= 10 * 365 * 86400
        ):
            raise ValidationError(
                f"archive_retention must be seconds in [1, 10y], got {archive_retention!r}"
            )
        self.store = store
        self.tracker = tracker
        self.rules = tuple(rules)
        self.by_name = {r.name: r for r in self.rules}
        self.batch_size = batch_size
        self.max_per_sweep = max_per_sweep
        self.retention_ms = round(archive_retention * 1000)
        self.notify = notify
        if (
            isinstance(effect_lease, bool)
            or not isinstance(effect_lease, (int, float))
            or not 0.05 <= effect_lease <= 86400
        ):
            raise ValidationError(
                f"expiry effect_lease must be seconds in [0.05, 86400], got {effect_lease!r}"
            )
        self.buckets = store.keys.expiry_buckets()
        self.archive = Archive(
            store,
            stats_key=self._stats_key,
            change_bucket=store.keys.change_bucket_of,
            archive_dir=archive_dir,
        )
        self.effects = Effects(store, self.archive, notify, round(effect_lease * 1000))
        self.job = FleetJob(
            store.client, store.keys, "expiry", interval, self._run, lease_ttl=lease_ttl
        )
        self._index_cache: dict[str, str] = {}
        if self.rules:
            store.expiry_index_of = self.index_of

    # -- keys ---------------------------------------------------------------------------------

    def index_of(self, ident: Identity) -> str:
        """The expiry index bucket of a session."""
        found = self._index_cache.get(ident.user_tag)
        if found is None:
            if len(self._index_cache) >= 65536:
                self._index_cache.clear()
            found = self.store.keys.expiry_index_of_tag(ident.user_tag)
            self._index_cache[ident.user_tag] = found
        return found

    def _stats_key(self, ident: Identity) -> str:
        keys = self.tracker.keys
        return str(keys.stats(keys.shard_of_user(ident.user_tag)))

    # -- rules --------------------------------------------------------------------------------

    @staticmethod
    def plan(rule: Rule) -> str:
        """expiry_act.lua's plan: stage times relative to the deadline, in ms."""
        stages: list[tuple[int, str]] = []
        if rule.warn_before:
            stages.append((-round(rule.warn_before * 1000), "warn"))
        if rule.action == "progressive":
            stages += [(round(s.after * 1000), s.action) for s in rule.stages]
        else:
            stages.append((0, rule.action))
        return ",".join(f"{o}:{a}" for o, a in stages)

    def spec(
        self,
        rule: Rule,
        session: Session,
        now_ms: int,
        start_ms: int | None = None,
        *,
        period: Period | None = None,
    ) -> ExpirySpec | None:
        """The spec a rule arms on a session in ``period`` (absolute age, daily boundary,
        message limit count from its start): the one the session is in unless given; with
        ``start_ms``, a new one starting then with the session as it is."""
        if period is None:
            period = (
                Period.of(session)
                if start_ms is None
                else Period.restart(session, start_ms, rule.policy)
            )
        spec = rule.policy.spec(rule.name, period.context(now_ms, session.priority))
        if spec is None:
            return None
        lead = round(rule.warn_before * 1000) if rule.warn_before else 0
        return ExpirySpec(spec.rule, spec.mode, spec.fixed, spec.idle, spec.limit, spec.grace, lead)

    async def arm(
        self,
        session: Session,
        now_ms: int | None = None,
        *,
        start_ms: int | None = None,
        repick: bool = False,
    ) -> ExpirySpec | None:
        """Give a session its rule (the first that matches it), or none, in the period it is
        in (from its creation, or its latest restore: field b); ``start_ms``: a new period
        starts then, with the session as it is (a restore), recorded in field b. ``repick``:
        after a priority change, only while the session still has that priority (a writer
        that changed it again re-picks for its own). Idempotent."""
        ident = parse_session_id(session.session_id)
        rule = first_match(self.rules, ident, session.priority)
        now = now_ms if now_ms is not None else await self._now()
        period = (
            Period.of(session)
            if start_ms is None
            else Period.restart(session, start_ms, rule.policy if rule else None)
        )
        spec = None if rule is None else self.spec(rule, session, now, period=period)
        if spec is None and session._expiry is None:
            return None
        x = "" if spec is None or spec.fixed is None else str(spec.fixed)
        y = "" if spec is None else spec.field_y()
        key = self.store.keys.session(ident)
        b = "" if start_ms is None else period.field_b()
        args = [x, y, str(_ms(session.created_at)), b, str(session.priority) if repick else ""]
        await self.store.scripts.expiry_arm.run(
            self.store.client, [key, self.index_of(ident)], args
        )
        return spec

    async def _now(self) -> int:
        try:
            sec, usec = await self.store.client.time()
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading its clock: {exc}") from exc
        return int(sec) * 1000 + int(usec) // 1000

    # -- acting -------------------------------------------------------------------------------

    async def act(self, ident: Identity, created_ms: int, rule: Rule, mode: str) -> list[str]:
        """Run expiry_act.lua for one session (every action's Redis side happens there), then
        deliver the effects it recorded in the outbox; returns the actions applied."""
        keys = self.store.keys
        key = keys.session(ident)
        index = self.index_of(ident)
        outbox = keys.expiry_outbox_of(index)
        hkey, skey, aindex, member = self.archive.keys_of(ident, created_ms)
        channel = keys.expiry_channel(rule.channel or "expiry")
        plan = self.plan(rule)
        script_keys = [
            key,
            keys.user_index(ident.user_tag),
            index,
            keys.events_of_session_key(key),
            self._stats_key(ident),
            hkey,
            skey,
            aindex,
            keys.change_bucket_of(ident),
            keys.turn(ident),
            outbox,
            keys.expiry_queues_of(outbox),
        ]
        args = [
            mode,
            rule.name,
            plan,
            str(self.retention_ms),
            ident.suffix,
            member,
            str(created_ms),
            ident.session_id,
            channel,
            str(TURN_RETRY_MS),
            await self._suspend_spec(ident, plan),
            self.effects.flags(),
            str(self.effects.lease_ms),
            "",
            encode_value(f"expiry:{rule.name}"),
            str(self.store.limits.max_fields),
            await self._next_fixed(rule),
        ]
        for _ in range(MERGE_RETRIES):
            target = await self._merge_target(ident, created_ms) if ":merge" in plan else None
            if target is not None:
                args[13] = str(target[1])
            reply = await self.store.scripts.expiry_act.run(
                self.store.client, [*script_keys, *([target[0]] if target else [])], args
            )
            if int(reply[0]) != -2:
                break
            args[13] = ""
        if int(reply[0]) <= 0:
            return []
        actions = [a.decode() if isinstance(a, bytes) else str(a) for a in reply[2]]
        if reply[3]:
            await self.effects.deliver(outbox, reply[3])
        return actions

    async def _next_fixed(self, rule: Rule) -> str:
        """expiry_act.lua's ARGV[17]: a daily rule's next two boundaries after now, so a rule
        spent with the session in place waits for the next one (the script takes the first
        still ahead on its own clock). Other rules: "" (their fixed deadline fires once)."""
        if not isinstance(rule.policy, Daily):
            return ""
        first = rule.policy.next_boundary(await self._now())
        return f"{first} {rule.policy.next_boundary(first)}"

    async def _suspend_spec(self, ident: Identity, plan: str) -> bytes | str:
        """transition.lua's table argument for "suspended" on this platform, if the plan
        suspends (the acting script moves the session through the state machine)."""
        if ":suspend" not in plan:
            return ""
        table = await self.tracker.transitions.current_table()
        events = self.tracker.events
        arg = table.script_arg(ident.platform, "suspended", events.max_len, events.max_age_ms)
        return bytes(arg)

    async def _merge_target(self, ident: Identity, created_ms: int) -> tuple[str, int] | None:
        """The same user's newest other session on the same chat, created after this one:
        (its key, its created ms), or None."""
        newer = [
            s
            for s in await self.store.list_user_sessions(ident.user_id)
            if s.platform == ident.platform
            and s.chat_id == ident.chat_id
            and s.session_id != ident.session_id
            and _ms(s.created_at) > created_ms
        ]
        if not newer:
            return None
        target = max(newer, key=lambda s: s.created_at)
        return target.session_key, _ms(target.created_at)

    async def on_access(self, session_id: str) -> bool:
        """A write found the session past its deadline (SessionExpired): apply the rule's
        remaining stages once (a concurrent caller's call applies nothing). Returns whether
        the session is gone now (ended here or by another process)."""
        ident = parse_session_id(session_id)
        key = self.store.keys.session(ident)
        try:
            created, y = await self.store.client.hmget(key, "c", "y")
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during expiry: {exc}") from exc
        if created is None:
            return True
        if y is None:
            return False
        rule = self.by_name.get(ExpirySpec.parse(None, y).rule)
        if rule is None:
            await self.store.scripts.expiry_arm.run(
                self.store.client, [key, self.index_of(ident)], ["", "", created.decode()]
            )
            return False
        await self.act(ident, int(created), rule, "access")
        return not await self.store.exists(session_id)

    async def recently_ended(self, session_id: str) -> bool:
        """Whether expiry archived this identity's session within the last RECENT_MS (so a
        write that found no session belongs to its successor)."""
        if not self.rules:
            return False
        ident = parse_session_id(session_id)
        try:
            entries = await self.store.client.hgetall(self.store.keys.archive_index(ident.user_tag))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during expiry: {exc}") from exc
        now = await self._now()
        return any(
            m.decode().rpartition("#")[0] == ident.suffix and now - int(at) <= RECENT_MS
            for m, at in entries.items()
        )

    async def past_deadline(self, session: Session) -> bool:
        """Whether a session read from Redis is past its deadline (rules decided by scripts)."""
        if session._expiry is None:
            return False
        spec = ExpirySpec.parse(session._expiry[0], session._expiry[1] or b"")
        return spec.mode != "py" and _past(spec, session, await self._now())

    async def successor_for(self, session_id: str, **create: Any) -> Session:
        """The session that follows an ended one (created if needed, by whichever caller
        comes first), carrying the ended one's archive id in metadata ``previous_session``."""
        ident = parse_session_id(session_id)
        previous = await self.archive.newest_in_redis(ident) or session_id
        metadata = dict(create.pop("metadata", None) or {})
        metadata.setdefault("previous_session", previous)
        fresh = await self.store.get_or_create(
            ident.chat_id,
            ident.user_id,
            ident.platform,
            ident.thread_id,
            metadata=metadata,
            **create,
        )
        if fresh._expiry is None:
            await self.arm(fresh)
        return fresh

    async def restore_archived(
        self, session_id: str, *, archive_id: str | None = None, replace: bool = False
    ) -> Session:
        """Bring an archived session back whole and arm its rule again, its period starting
        at the restore: an absolute age counts from it, a daily reset waits for the next
        boundary after it, a message limit or a token budget counts what is used after it, a
        custom callable is asked again once the session is active after it (restoring means
        "bring it back", not "expire it again at once")."""
        ident = parse_session_id(session_id)
        aid = archive_id or await self.archive.latest(session_id)
        if aid is None:
            raise ValidationError(f"no archived session for {session_id!r}")
        if aid.partition("#")[0] != ident.session_id:
            raise ValidationError(f"archive {aid!r} is not one of session {session_id!r}")
        session = await self.archive.restore(aid, replace=replace)
        if self.rules:
            # The period starts when the restoring script ran: the activity it recorded.
            await self.arm(session, start_ms=_ms(session.last_activity))
        return session

    async def get_or_create(self, ident: Identity, **create: Any) -> Session:
        """get_or_create with the deadline decided: a session past it gets its rule applied
        once, and a fresh session (carrying the old id) is returned in its place."""
        for _ in range(3):
            session = await self.store.get_or_create(
                ident.chat_id, ident.user_id, ident.platform, ident.thread_id, **create
            )
            if session._expiry is None:
                if self.rules:
                    await self.arm(session)
                return session
            spec = ExpirySpec.parse(session._expiry[0], session._expiry[1] or b"")
            now = await self._now()
            if spec.mode == "py" or not _past(spec, session, now):
                return session
            rule = self.by_name.get(spec.rule)
            if rule is None:
                return session
            actions = await self.act(ident, _ms(session.created_at), rule, "access")
            if actions and actions[-1] in ("archive", "delete", "merge"):
                return await self.successor_for(session.session_id, **create)
        return session

    # -- information ----------------------------------------------------------------------------

    async def get_expiry_info(self, session_id: str) -> ExpiryInfo | None:
        """Which rule governs the session, its deadline and what happens then; None if no
        such session."""
        session = await self.store.find_by_id(session_id)
        if session is None:
            return None
        ident = parse_session_id(session_id)
        rule = first_match(self.rules, ident, session.priority)
        if session._expiry is None:
            if rule is None:
                return ExpiryInfo(session_id, None, None, None, None, None, armed=False)
            return ExpiryInfo(
                session_id,
                rule.name,
                rule.policy.describe(),
                rule.action,
                None,
                self.plan(rule),
                armed=False,
            )
        spec = ExpirySpec.parse(session._expiry[0], session._expiry[1] or b"")
        armed = self.by_name.get(spec.rule)
        due = due_at(spec, _ms(session.last_activity), session.message_count)
        return ExpiryInfo(
            session_id,
            spec.rule,
            armed.policy.describe() if armed else None,
            armed.action if armed else None,
            due,
            self.plan(armed) if armed else None,
            armed=True,
            spent=due is not None and stages_done(session._expiry[2], due) is None,
        )

    # -- scheduling -----------------------------------------------------------------------------

    def schedule(self, scheduler: Any) -> None:
        """Run the sweep on this process's APScheduler, once per interval across the fleet."""
        if self.rules:
            self.job.schedule(scheduler)


def _past(spec: ExpirySpec, session: Session, now: int) -> bool:
    w = session._expiry[2] if session._expiry is not None else None
    return past_due(spec, _ms(session.last_activity), session.message_count, w, now)
