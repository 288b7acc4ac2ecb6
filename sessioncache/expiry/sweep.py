"""The expiry sweep: every session whose next stage is due, bucket by bucket of the expiry
index, in bounded batches with bounded concurrency (ExpiryEngine's sweep methods, a mixin)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from ..errors import BackendUnavailable
from ..fleet import FleetRun
from ..identity import Identity, parse_session_id
from ..models import Session
from ..slots import SLOTS
from ..store import SessionStore
from .effects import Effects
from .policies import ExpirySpec, Period, due_at, fired, stages_done
from .report import ExpiryReport
from .rules import Rule

SWEEP_CONCURRENCY = 16
"""Script calls a sweep keeps in flight at once."""


@dataclass
class _Sweep:
    now: int
    dry_run: bool
    report: ExpiryReport = field(default_factory=ExpiryReport)


class SweepMethods:
    """ExpiryEngine's sweep (see docs/expiry.md)."""

    store: SessionStore
    effects: Effects
    by_name: dict[str, Rule]
    batch_size: int
    max_per_sweep: int
    buckets: int

    if TYPE_CHECKING:  # defined by ExpiryEngine

        async def _now(self) -> int: ...

        async def act(
            self, ident: Identity, created_ms: int, rule: Rule, mode: str
        ) -> list[str]: ...

        async def arm(self, session: Session, now_ms: int | None = None) -> ExpirySpec | None: ...

        def index_of(self, ident: Identity) -> str: ...

        @staticmethod
        def plan(rule: Rule) -> str: ...

    async def _run(self, run: FleetRun) -> ExpiryReport:
        return await self.sweep()

    async def sweep(
        self, dry_run: bool = False, *, progress: Callable[[int], None] | None = None
    ) -> ExpiryReport:
        """Act on every session whose next stage is due, bucket by bucket, in bounded batches;
        ``progress`` is given the number of sessions examined so far after each bucket."""
        began = time.perf_counter()
        state = _Sweep(await self._now(), dry_run)
        state.report.dry_run = dry_run
        buckets, outboxes = await self._buckets()
        for start in range(0, len(buckets), 512):
            chunk = buckets[start : start + 512]
            heads = await self._heads(chunk, state.now)
            for bucket, members in zip(chunk, heads, strict=True):
                if members:
                    await self._sweep_bucket(bucket, members, state)
                    if progress is not None:
                        progress(state.report.examined)
                if state.report.examined >= self.max_per_sweep:
                    break
        if not dry_run:
            # Effects an earlier call recorded but did not deliver (its process died, or the
            # effect failed), once their claim has lapsed.
            state.report.effects = await self.effects.drain(outboxes, self.batch_size)
        state.report.duration_s = round(time.perf_counter() - began, 6)
        return state.report

    async def _buckets(self) -> tuple[list[str], list[str]]:
        """Every bucket that may hold entries, and every effect outbox: the 16 of each of a
        standalone server; on a cluster (one per slot) those that exist, found by one SCAN
        on each primary (an empty zset is no key), rather than 16384 reads per sweep."""
        keys = self.store.keys
        if self.buckets != SLOTS:
            return (
                [keys.expiry_index(i) for i in range(self.buckets)],
                [keys.expiry_outbox(i) for i in range(self.buckets)],
            )
        try:
            found = {
                k.decode() if isinstance(k, bytes) else k
                async for k in self.store.client.scan_iter(
                    match=keys.expiry_keys_pattern(), count=1000, _type="zset"
                )
            }
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable listing expiry buckets: {exc}") from exc
        head = keys.expiry_index_pattern()[:-1]
        outbox_head = keys.expiry_outbox(0).partition("{")[0]
        return (
            sorted(k for k in found if k.startswith(head)),
            sorted(k for k in found if k.startswith(outbox_head)),
        )

    async def _heads(self, buckets: list[str], now: int) -> list[list[bytes]]:
        pipe = self.store.client.pipeline(transaction=False)
        for bucket in buckets:
            pipe.zrangebyscore(bucket, "-inf", now, start=0, num=self.batch_size)
        try:
            return list(await pipe.execute())
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading the expiry index: {exc}") from exc

    async def _sweep_bucket(self, bucket: str, members: list[bytes], state: _Sweep) -> None:
        seen: set[bytes] = set()
        while members and state.report.examined < self.max_per_sweep:
            fresh = [m for m in members if m not in seen]
            if not fresh:
                break  # entries a dry run (or a concurrent writer) left in place
            seen.update(fresh)
            state.report.batches += 1
            await self._batch(fresh, state)
            try:
                members = await self.store.client.zrangebyscore(
                    bucket, "-inf", state.now, start=0, num=self.batch_size
                )
            except RedisError as exc:
                raise BackendUnavailable(
                    f"Redis unavailable reading the expiry index: {exc}"
                ) from exc

    async def _batch(self, members: list[bytes], state: _Sweep) -> None:
        pipe = self.store.client.pipeline(transaction=False)
        for m in members:
            pipe.hmget(m, "c", "x", "y", "a", "m", "w")
        try:
            rows = await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during the sweep: {exc}") from exc
        # Bounded concurrency: the pool is shared with the bot's own calls.
        gate = asyncio.Semaphore(SWEEP_CONCURRENCY)

        async def one(member: bytes, row: list[bytes | None]) -> None:
            async with gate:
                await self._one(member, row, state)

        await asyncio.gather(*(one(m, row) for m, row in zip(members, rows, strict=True)))

    async def _one(self, member: bytes, row: list[bytes | None], state: _Sweep) -> None:
        report = state.report
        report.examined += 1
        key = member.decode()
        ident = parse_session_id(self.store.keys.session_id_of_key(key))
        created, x, y = row[0], row[1], row[2]
        if created is None or y is None:
            if not state.dry_run:  # gone (deleted, expired by TTL): the script drops the entry
                await self._drop(ident, key)
            return
        spec = ExpirySpec.parse(x, y)
        rule = self.by_name.get(spec.rule)
        if rule is None:
            if not state.dry_run:
                await self.store.scripts.expiry_arm.run(
                    self.store.client, [key, self.index_of(ident)], ["", "", created.decode()]
                )
            return
        if state.dry_run:
            for action in self._would(rule, spec, row, state.now):
                report.count(action)
            return
        mode = "due"
        if spec.mode == "py":
            session = await self.store.find_by_id(ident.session_id)
            if session is None:
                return
            if not await fired(rule.policy, session, state.now, Period.of(session)):
                await self.arm(session, state.now)
                return
            mode = "now"
        for action in await self.act(ident, int(created), rule, mode):
            report.count(action)

    async def _drop(self, ident: Identity, key: str) -> None:
        # In a script that re-checks: a session recreated and armed since the read keeps it.
        try:
            await self.store.scripts.expiry_arm.run(
                self.store.client, [key, self.index_of(ident)], ["", "-", ""]
            )
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during the sweep: {exc}") from exc

    def _would(self, rule: Rule, spec: ExpirySpec, row: list[bytes | None], now: int) -> list[str]:
        """The stages a sweep would apply now (dry run; Python-decided rules not evaluated)."""
        due = due_at(spec, int(row[3] or 0), int(row[4] or 0))
        if due is None:
            return []
        done = stages_done(row[5], due)
        if done is None:
            return []  # spent: every stage of this deadline ran, the session stayed
        out = []
        for item in self.plan(rule).split(",")[done:]:
            offset, _, action = item.partition(":")
            if now < due + int(offset):
                break
            out.append(action)
            if action in ("archive", "delete"):
                break
        return out
