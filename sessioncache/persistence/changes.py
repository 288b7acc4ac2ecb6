"""The change index behind incremental backups: one zset per cluster slot, kept by the scripts.

Every write script (create, update, touch, delete, restore_session) that finds its slot's
bucket armed (holding the '#' counter) adds the session key with the next sequence number, in
the same atomic step as the write. A backup reads the buckets directly (no SCAN of sessions or
of the keyspace) and, once its file is durable, trims what it read; change_trim.lua keeps later
entries. On a standalone server a batch of buckets is read with one EXISTS and one ZUNION; in a
cluster, where those would cross slots, with one ZRANGE per slot. See docs/persistence.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from ..backends import is_cluster
from ..errors import BackendUnavailable, ChangeIndexUnarmed
from ..keys import KeySchema
from ..scripts import Script

COUNTER = b"#"


async def pipelined(client: Any, calls: Sequence[tuple[str, tuple[Any, ...]]]) -> list[Any]:
    """Run (command, args) calls in one non-transactional pipeline (per node in a cluster)."""
    try:
        async with client.pipeline(transaction=False) as pipe:
            for name, args in calls:
                getattr(pipe, name)(*args)
            return list(await pipe.execute())
    except RedisError as exc:
        raise BackendUnavailable(f"Redis unavailable during a pipelined batch: {exc}") from exc


async def run_script_batch(
    client: Any, script: Script, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
) -> list[Any]:
    """EVALSHA one script for many (keys, args) in a pipeline; reload once on NOSCRIPT.

    Only for scripts that are safe to run twice: after a NOSCRIPT the whole batch is replayed.
    """
    if is_cluster(client):
        # redis-py refuses EVALSHA in cluster pipelines: run the calls concurrently instead,
        # at most 64 in flight (each Script call reloads on NOSCRIPT by itself).
        out: list[Any] = []
        try:
            for start in range(0, len(calls), 64):
                chunk = calls[start : start + 64]
                out += await asyncio.gather(*(script(client, k, a) for k, a in chunk))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during {script.name}: {exc}") from exc
        return out
    for attempt in (1, 2):
        try:
            async with client.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                return list(await pipe.execute())
        except NoScriptError:
            if attempt == 2:
                raise
            await client.script_load(script.source)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during {script.name}: {exc}") from exc
    raise AssertionError("unreachable")


@dataclass(slots=True)
class BucketRead:
    """The changes recorded in one slot's bucket, read atomically."""

    slot: int
    cut: float
    """Highest sequence read: trimming up to it drops exactly what this read saw."""
    members: list[bytes]


def _bucket_of_member(keys: KeySchema, member: bytes) -> int:
    # Members are session keys ``ns:s:{<u>}:...``; the user tag picks the bucket.
    start = member.index(b"{") + 1
    return keys.change_bucket_index(member[start : member.index(b"}", start)].decode())


class ChangeIndex:
    """Arm, read and trim the per-slot change buckets of one namespace."""

    def __init__(self, client: Any, keys: KeySchema, batch: int = 1024) -> None:
        self.client = client
        self.keys = keys
        self.batch = batch
        self.cluster = is_cluster(client)

    def _slot_batches(self) -> Iterator[range]:
        total = self.keys.change_buckets
        for start in range(0, total, self.batch):
            yield range(start, min(total, start + self.batch))

    async def _armed(self, slots: range) -> list[int]:
        """Slots of the batch whose bucket lacks the '#' counter."""
        buckets = [self.keys.change_bucket(s) for s in slots]
        if not self.cluster:
            # Every armed bucket exists (it holds '#'), so one EXISTS answers for the batch.
            found = await pipelined(self.client, [("exists", tuple(buckets))])
            if found[0] == len(buckets):
                return []
        scores = await pipelined(self.client, [("zscore", (b, COUNTER)) for b in buckets])
        return [s for s, score in zip(slots, scores, strict=True) if score is None]

    async def arm(self) -> None:
        """Give every bucket its '#' counter (idempotent); writes are recorded from then on."""
        for slots in self._slot_batches():
            missing = list(slots) if self.cluster else await self._armed(slots)
            if missing:
                calls = [
                    ("zadd", (self.keys.change_bucket(s), {COUNTER: 0}, True)) for s in missing
                ]
                await pipelined(self.client, calls)

    async def arm_and_cut(self) -> list[tuple[int, float]]:
        """Arm every bucket and return each non-empty bucket's cut (a full backup's start).

        A bucket armed before its cut is read records every later change above that cut. In a
        cluster one ZRANGE per bucket both reads the cut and shows whether '#' is there, so
        only the unarmed buckets get a ZADD afterwards (half the round trips of arm() then
        read_batches()); a bucket unarmed until then holds no change to cut.
        """
        if not self.cluster:
            await self.arm()
            return [(r.slot, r.cut) async for batch in self.read_batches() for r in batch]
        cuts: list[tuple[int, float]] = []
        for slots in self._slot_batches():
            buckets = [self.keys.change_bucket(s) for s in slots]
            reads: list[tuple[str, tuple[Any, ...]]] = [
                ("zrange", (b, 0, -1, False, True)) for b in buckets
            ]
            per_slot = await pipelined(self.client, reads)
            unarmed = []
            for slot, entries in zip(slots, per_slot, strict=True):
                members = [score for member, score in entries if member != COUNTER]
                if len(members) == len(entries):
                    unarmed.append(slot)
                elif members:
                    cuts.append((slot, max(float(score) for score in members)))
            if unarmed:
                calls = [
                    ("zadd", (self.keys.change_bucket(s), {COUNTER: 0}, True)) for s in unarmed
                ]
                await pipelined(self.client, calls)
        return cuts

    async def read_batches(self) -> AsyncIterator[list[BucketRead]]:
        """The non-empty buckets, a batch of slots at a time.

        ChangeIndexUnarmed if any bucket lost its counter.
        """
        for slots in self._slot_batches():
            # In a cluster the ZRANGE below shows the '#' counter of each bucket itself.
            missing = [] if self.cluster else await self._armed(slots)
            if missing:
                raise ChangeIndexUnarmed(missing[0])
            buckets = [self.keys.change_bucket(s) for s in slots]
            found: dict[int, BucketRead] = {}
            calls: list[tuple[str, tuple[Any, ...]]]
            if self.cluster:
                calls = [("zrange", (b, 0, -1, False, True)) for b in buckets]
                per_slot = await pipelined(self.client, calls)
                for slot, slot_entries in zip(slots, per_slot, strict=True):
                    if not any(member == COUNTER for member, _ in slot_entries):
                        raise ChangeIndexUnarmed(slot)
                entries = [e for slot_entries in per_slot for e in slot_entries]
            else:
                calls = [("zunion", (buckets, "MAX", True))]
                entries = (await pipelined(self.client, calls))[0]
            for member, score in entries:
                if member == COUNTER:
                    continue
                slot = _bucket_of_member(self.keys, member)
                read = found.get(slot)
                if read is None:
                    read = found[slot] = BucketRead(slot, float(score), [])
                read.members.append(member)
                read.cut = max(read.cut, float(score))
            yield sorted(found.values(), key=lambda r: r.slot)

    async def disarm(self) -> None:
        """Stop recording changes: delete every bucket and the chain head."""
        for slots in self._slot_batches():
            await pipelined(self.client, [("delete", (self.keys.change_bucket(s),)) for s in slots])
        await pipelined(self.client, [("delete", (self.keys.backup_head(),))])

    async def trim(self, script: Script, cuts: Sequence[tuple[int, float]]) -> int:
        """Drop entries up to each bucket's cut (the backup holding them is durable)."""
        removed = 0
        for start in range(0, len(cuts), self.batch):
            chunk = cuts[start : start + self.batch]
            calls = [([self.keys.change_bucket(slot)], [f"{cut:.0f}"]) for slot, cut in chunk]
            removed += sum(int(r) for r in await run_script_batch(self.client, script, calls))
        return removed
