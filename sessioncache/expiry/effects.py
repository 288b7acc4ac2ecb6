"""The expiry outbox: effects outside Redis (the notify callback, the archive file), recorded
by expiry_act.lua in the call that applies the action, delivered from there by claim and ack.

The process that applied the action delivers at once (its entries come back claimed by it);
a process that dies first leaves them to the next sweep once their claim lapses. So a crash
between the script and the effect delays the effect, never loses it. The archive file is
written by temp file and rename under a name given by the archive id (idempotent); a notice
carries the same ``notice_id`` at every delivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import SessionCacheError
from ..store import SessionStore
from .report import ExpiryNotice

if TYPE_CHECKING:
    from .archive import Archive

log = logging.getLogger(__name__)

Notify = Callable[[ExpiryNotice], Awaitable[None] | None]


class Effects:
    """Delivers one store's expiry outbox entries (see the module docstring)."""

    def __init__(
        self, store: SessionStore, archive: Archive, notify: Notify | None, lease_ms: int
    ) -> None:
        self.store = store
        self.archive = archive
        self.notify = notify
        self.lease_ms = lease_ms
        self._script = store.scripts.expiry_outbox

    def flags(self) -> str:
        """expiry_act.lua's ARGV[12]: which effects this process records."""
        return ("n" if self.notify is not None else "") + ("f" if self.archive.dir else "")

    async def deliver(self, outbox: str, entries: Sequence[bytes | str]) -> int:
        """Carry out entries claimed by this process, then acknowledge those done; returns how
        many. One that fails stays in the outbox for a later sweep (after its claim lapses)."""
        done: list[str] = []
        for raw in entries:
            entry = raw.decode() if isinstance(raw, bytes) else raw
            try:
                await self._one(entry)
            except (SessionCacheError, OSError, ValueError) as exc:
                log.warning("expiry effect %s failed: %s (kept for a later sweep)", entry, exc)
                continue
            except Exception:  # the bot's callback: any failure keeps the entry
                log.exception("expiry notify callback failed (kept for a later sweep)")
                continue
            done.append(entry)
        if done:
            await self._script.run(self.store.client, [outbox], ["ack", *done])
        return len(done)

    async def drain(self, outboxes: Sequence[str], batch: int) -> int:
        """Claim and deliver every entry whose time has come (entries left by a process that
        died, or whose delivery failed), outbox by outbox; returns how many were delivered.
        Only the kinds of effect this process performs (flags()) are claimed: an archive-file
        entry waits for a process with archive_dir, a notice for one with a callback."""
        delivered = 0
        kinds = self.flags()
        if not kinds:  # nothing this process can perform: leave every entry to one that can
            return 0
        for box in outboxes:
            while True:
                claimed = await self._script.run(
                    self.store.client, [box], ["claim", str(batch), str(self.lease_ms), kinds]
                )
                if not claimed:
                    break
                delivered += await self.deliver(box, claimed)
                if len(claimed) < batch:
                    break
        return delivered

    async def _one(self, entry: str) -> None:
        kind, _, rest = entry.partition("|")
        if kind == "n":
            action, rule, due, _created, sid = rest.split("|", 4)
            if self.notify is None:
                raise ValueError("no notify callback in this process")
            notice = ExpiryNotice(action, sid, rule, int(due), notice_id=entry)
            result = self.notify(notice)
            if asyncio.iscoroutine(result):
                await result
        elif kind == "f":
            created, _, sid = rest.partition("|")
            if self.archive.dir is None:  # never ack a file this process cannot write
                raise ValueError("no archive_dir in this process")
            await self.archive.write_file(f"{sid}#{created}")
        else:
            raise ValueError(f"unknown expiry effect {entry!r:.80}")
