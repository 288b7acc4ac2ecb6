"""The expiry outbox: effects outside Redis (the notify callback, the archive file), recorded
by expiry_act.lua in the call that applies the action, delivered from there by claim and ack.

The process that applied the action delivers at once (its entries come back claimed by it);
a process that dies first leaves them to the next sweep once their claim lapses. So a crash
between the script and the effect delays the effect, never loses it. While a process performs
entries it keeps their claim (expiry_outbox.lua ``extend``, every third of the lease), so an
effect that takes longer than the lease is not claimed by another process meanwhile. A
session's notices go out in the order written, one at a time (lib/outbox.lua): the ack of one
hands the next to the process that acknowledged it. The archive file is written by temp file
and rename under a name given by the archive id (idempotent); a notice carries the same
``notice_id`` at every delivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
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

    def _keys(self, outbox: str) -> list[str]:
        return [outbox, self.store.keys.expiry_queues_of(outbox)]

    async def deliver(self, outbox: str, entries: Sequence[bytes | str]) -> int:
        """Carry out entries claimed by this process, in order, acknowledging each once done,
        and the notices each ack hands on (the next of the same session); returns how many
        were done. Their claims are kept while this runs; one that fails stays in the outbox
        for a later sweep (after its claim lapses), and its session's later notices with it."""
        keys = self._keys(outbox)
        todo = deque(_text(e) for e in entries)
        held = set(todo)  # claimed by this process and not done yet: the keeper extends them
        keeper = asyncio.create_task(self._keep(keys, held))
        done = 0
        try:
            while todo:
                entry = todo.popleft()
                if entry not in held:  # its claim lapsed before it began: another's now
                    continue
                if not await self._attempt(entry):
                    held.discard(entry)  # left to lapse: a later sweep tries again
                    continue
                ack = await self._script.run(
                    self.store.client, keys, ["ack", str(self.lease_ms), entry]
                )
                held.discard(entry)
                done += 1
                for after in ack[1]:  # the same session's next notice: ours now, in order
                    held.add(_text(after))
                    todo.append(_text(after))
        finally:
            keeper.cancel()
            await asyncio.wait([keeper])
        return done

    async def _keep(self, keys: list[str], held: set[str]) -> None:
        """Every third of the lease, extend the claim of the entries in ``held``; those whose
        claim had lapsed (this process stalled for most of a lease) are dropped from it."""
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            asked = list(held)
            if not asked:
                continue
            try:
                kept = await self._script.run(
                    self.store.client, keys, ["extend", str(self.lease_ms), *asked]
                )
            except Exception as exc:  # an outage (or worse): try again at the next beat
                log.warning("keeping expiry effect claims failed: %s", exc)
                continue
            still = {_text(k) for k in kept}
            for entry in asked:
                if entry not in still and entry in held:
                    held.discard(entry)
                    log.warning("expiry effect %s: claim lapsed while held", entry)

    async def _attempt(self, entry: str) -> bool:
        """Perform one entry; whether it was done (a failure is logged)."""
        try:
            await self._one(entry)
        except (SessionCacheError, OSError, ValueError) as exc:
            log.warning("expiry effect %s failed: %s (kept for a later sweep)", entry, exc)
            return False
        except Exception:  # the bot's callback: any failure keeps the entry
            log.exception("expiry notify callback failed (kept for a later sweep)")
            return False
        return True

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
                    self.store.client,
                    self._keys(box),
                    ["claim", str(batch), str(self.lease_ms), kinds],
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
            # due is "<deadline ms>:<stage>" (no stage in entries of an earlier version)
            notice = ExpiryNotice(action, sid, rule, int(due.partition(":")[0]), notice_id=entry)
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


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
