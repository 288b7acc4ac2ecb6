"""Restore strategies: replace, merge (newer wins), skip, interactive; one script per session."""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, TextIO

from redis.exceptions import RedisError

from ..errors import BackendUnavailable, IntegrityError, ValidationError
from ..identity import parse_session_id
from ..models import Session, session_from_hash
from ..store import SessionStore
from .changes import pipelined, run_script_batch
from .formats import Record
from .records import MAX_EVENT_ENTRIES

STRATEGIES = ("replace", "merge", "skip", "interactive")

Decide = Callable[[Session, Session], "bool | Awaitable[bool]"]
"""interactive: given (stored, incoming), True takes the incoming session, False keeps ours."""


def check_strategy(strategy: object) -> str:
    if strategy not in STRATEGIES:
        raise ValidationError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    return str(strategy)


@dataclass(slots=True)
class RestoreReport:
    """What a restore did, session by session."""

    backup_id: str
    strategy: str
    chain: list[str] = field(default_factory=list)
    written: int = 0
    kept: int = 0
    expired: int = 0
    tombstones: int = 0
    wiped: int = 0
    seconds: float = 0.0
    events: int = 0
    """Event streams written (each replaced the session's live stream)."""
    events_skipped: int = 0
    """Event streams not written: their session's record was not (kept, expired), or the
    stream itself had expired."""


class Progress:
    """A one-line progress bar on stderr (redrawn at most 5 times a second)."""

    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.done = 0
        self._began = self._drawn = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._drawn >= 0.2:
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self._began, 1e-9)
        if self.total:
            filled = int(30 * min(1.0, self.done / self.total))
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}"
        else:
            bar = f"{self.done}"
        self.stream.write(f"\r{self.label}: {bar} sessions, {rate:,.0f}/s ")
        self.stream.flush()

    def close(self) -> None:
        self._draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()


class Restorer:
    """Writes records into a store under one strategy."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.keys = store.keys
        self.script = store.scripts.restore_session
        self.events_script = store.scripts.restore_events

    async def load_scripts(self) -> None:
        """SCRIPT LOAD the restore scripts (on every primary of a cluster)."""
        try:
            for script in (self.script, self.events_script):
                await self.store.client.script_load(script.source)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable loading restore scripts: {exc}") from exc

    async def wipe(self) -> int:
        """Delete every key of the namespace except the backup machinery's own and the op logs
        (a late retry of a write made before the restore must still be recognised)."""
        keep = (
            self.keys.change_bucket_pattern()[:-1].encode(),
            self.keys.op_log_pattern()[:-1].encode(),
            self.keys.lease("x")[: -len("{x}")].encode(),
        )
        doomed: list[bytes] = []
        wiped = 0
        try:
            async for key in self.store.client.scan_iter(match=self.keys.all_pattern(), count=1000):
                if not key.startswith(keep):
                    doomed.append(key)
                if len(doomed) >= 1000:
                    await pipelined(self.store.client, [("delete", (k,)) for k in doomed])
                    wiped += len(doomed)
                    doomed = []
        except RedisError as exc:
            raise BackendUnavailable(
                f"Redis unavailable while wiping the namespace: {exc}"
            ) from exc
        if doomed:
            await pipelined(self.store.client, [("delete", (k,)) for k in doomed])
            wiped += len(doomed)
        return wiped

    def _call(self, mode: str, record: Record) -> tuple[list[str], list[Any]]:
        key, index, bucket, suffix = self.keys.restore_keys(record[1])
        # The expiry index of the session's slot: a session backed up with a rule is armed
        # again by the restore itself (docs/expiry.md).
        expiry = self.keys.expiry_index_of_tag(record[1].split(":", 3)[2])
        fields: dict[bytes, bytes] = record[3]
        args: list[Any] = [mode, str(record[2]), suffix, fields[b"v"]]
        args.extend(chain.from_iterable(fields.items()))
        return [key, index, bucket, expiry], args

    def _events_call(self, record: Record) -> tuple[list[str], list[Any]]:
        """restore_events.lua's keys and arguments for one checked event stream record."""
        entries = record[3]
        if len(entries) > MAX_EVENT_ENTRIES:  # checked with the record; never sent anyway
            raise IntegrityError(f"stream of {record[1]!r} has too many entries")
        key = self.keys.events_of_session_key(self.keys.restore_keys(record[1])[0])
        args: list[Any] = [str(record[2])]
        for entry_id, values in entries:
            args.append(entry_id)
            args.append(len(values))
            args.extend(values)
        return [key], args

    async def apply(
        self,
        records: list[Record],
        strategy: str,
        report: RestoreReport,
        decide: Decide | None = None,
    ) -> None:
        """Apply one batch. Tombstones delete nothing: replace wiped first, merge/skip keep live.

        An event stream record replaces its session's stream when that session's record was
        written by this batch (under replace: always; the namespace was wiped).
        """
        puts = [r for r in records if r[0] == "s"]
        others = len(records) - len(puts)
        streams = [r for r in records if r[0] == "e"] if others else []
        report.tombstones += others - len(streams)
        written: set[str] = set()
        if puts:
            if strategy == "interactive":
                written = await self._interactive(puts, report, decide)
            else:
                calls = [self._call(strategy, r) for r in puts]
                replies = await run_script_batch(self.store.client, self.script, calls)
                self._count(replies, report)
                if streams and strategy != "replace":
                    written = {
                        r[1] for r, reply in zip(puts, replies, strict=True) if reply == 1
                    }
        if streams:
            await self._streams(streams, strategy, written, report)

    async def _streams(
        self, streams: list[Record], strategy: str, written: set[str], report: RestoreReport
    ) -> None:
        todo = streams if strategy == "replace" else [r for r in streams if r[1] in written]
        report.events_skipped += len(streams) - len(todo)
        if not todo:
            return
        calls = [self._events_call(r) for r in todo]
        for reply in await run_script_batch(self.store.client, self.events_script, calls):
            if reply == -1:
                report.events_skipped += 1
            else:
                report.events += 1

    @staticmethod
    def _count(replies: list[Any], report: RestoreReport) -> None:
        for reply in replies:
            if reply == 1:
                report.written += 1
            elif reply == 0:
                report.kept += 1
            else:
                report.expired += 1

    async def _interactive(
        self, puts: list[Record], report: RestoreReport, decide: Decide | None
    ) -> set[str]:
        """Ask per conflict; the ids of the sessions written."""
        if decide is None:
            raise ValidationError(
                "strategy 'interactive' needs a decide(stored, incoming) callback"
            )
        idents = [parse_session_id(r[1]) for r in puts]
        stored = await pipelined(
            self.store.client, [("hgetall", (self.keys.session(i),)) for i in idents]
        )
        calls = []
        asked: list[str] = []
        for ident, record, current in zip(idents, puts, stored, strict=True):
            if not current:
                # Written only if still absent: a session created meanwhile is not clobbered.
                calls.append(self._call("skip", record))
                asked.append(record[1])
                continue
            key = self.keys.session(ident)
            verdict = decide(
                session_from_hash(ident, key, current), session_from_hash(ident, key, record[3])
            )
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if verdict:
                calls.append(self._call("replace", record))
                asked.append(record[1])
            else:
                report.kept += 1
        if not calls:
            return set()
        replies = await run_script_batch(self.store.client, self.script, calls)
        self._count(replies, report)
        return {sid for sid, reply in zip(asked, replies, strict=True) if reply == 1}


def ask_on_terminal(stored: Session, incoming: Session) -> bool:
    """The CLI's interactive decision: show both versions and ask."""
    print(
        f"\n{stored.session_id}: stored v{stored.version} updated {stored.updated_at:%F %T}"
        f" / backup v{incoming.version} updated {incoming.updated_at:%F %T}",
        file=sys.stderr,
    )
    while True:
        sys.stderr.write("take the backup's version? [y/N] ")
        sys.stderr.flush()
        answer = input().strip().lower()
        if answer in ("y", "yes"):
            return True
        if answer in ("", "n", "no"):
            return False
