"""Turns: one worker at a time handles a conversation, fleet-wide; and inbound updates seen once.

A turn is a lease on a key in the conversation's slot: taken by turn_enter.lua only when it is
free and the caller is first in the line of waiters (arrival order), renewed by a background
task while held, given back on exit, and simply expired when its holder dies. A waiter that
dies leaves the line once its liveness (renewed at every poll) lapses.

TurnLock runs that protocol on any (lease, queue, waiters) key triple; Turns applies it to
sessions (``system.turn``), the aiogram event isolation to StorageKeys and the
python-telegram-bot update processor to chats, so all three share one lock and its guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import time
from base64 import urlsafe_b64encode
from collections.abc import AsyncIterator, Sequence
from typing import Any

from .errors import TurnBusy, TurnLost, ValidationError
from .identity import parse_session_id
from .scripts import ScriptRegistry, registry
from .store import SessionStore

log = logging.getLogger(__name__)


def _token() -> str:
    # 96 random bits: two processes never draw the same token for the same key.
    return urlsafe_b64encode(os.urandom(12)).decode()


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValidationError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


def wait_seconds(value: object, what: str = "timeout") -> float:
    """A wait in seconds; None is no limit (math.inf)."""
    return math.inf if value is None else _seconds(value, what)


class Turn:
    """A held turn (what ``async with system.turn(...)`` yields)."""

    def __init__(self, session_id: str, token: str) -> None:
        self.session_id = session_id
        """The conversation (a session id; for the integrations, the name of what is locked)."""
        self.token = token
        self.lost = False
        """Set when the lease could not be renewed: another worker may hold the turn now."""
        self.renewals = 0
        """How many times the lease was renewed so far."""


class TurnLock:
    """The turn protocol on a (lease, waiter queue, waiter liveness) key triple of one slot."""

    def __init__(
        self,
        client: Any,
        *,
        lease: float = 30.0,
        poll_interval: float = 0.005,
        max_poll_interval: float = 0.05,
        scripts: ScriptRegistry | None = None,
    ) -> None:
        self.client = client
        self.lease = _seconds(lease, "lease")
        self.poll_interval = _seconds(poll_interval, "poll_interval")
        self.max_poll_interval = _seconds(max_poll_interval, "max_poll_interval")
        scripts = registry() if scripts is None else scripts
        self._enter = scripts.turn_enter
        self._leave = scripts.turn_leave
        self._extend = scripts.lock_extend

    @contextlib.asynccontextmanager
    async def hold(
        self,
        keys: Sequence[str],
        name: str,
        *,
        timeout: float | None = 30.0,
        lease: float | None = None,
    ) -> AsyncIterator[Turn]:
        """Hold the turn on ``keys`` for the body of the ``async with``.

        Waits in arrival order behind other holders up to ``timeout`` seconds (None: no limit),
        then raises TurnBusy naming ``name``. The lease (default: this lock's ``lease``) is
        renewed every third of it while held; if renewal fails the body keeps running and
        TurnLost is raised at exit.
        """
        wait = wait_seconds(timeout)
        lease_s = self.lease if lease is None else _seconds(lease, "lease")
        keys = list(keys)
        held = Turn(name, _token())
        await self._acquire(keys, held, wait, lease_s)
        renewer = asyncio.get_running_loop().create_task(self._renew(keys, held, lease_s))
        try:
            yield held
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await self._leave.run(self.client, keys, [held.token])
        if held.lost:
            raise TurnLost(name)

    async def _acquire(self, keys: list[str], held: Turn, wait: float, lease_s: float) -> None:
        lease_ms = str(max(1, round(lease_s * 1000)))
        # A waiter stays in line while it polls; a dead one drops out after this.
        alive_ms = str(max(1000, round(self.max_poll_interval * 20_000)))
        args = [held.token, lease_ms, alive_ms]
        deadline = time.monotonic() + wait
        interval = self.poll_interval
        try:
            while True:
                if await self._enter.run(self.client, keys, args) == 1:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TurnBusy(held.session_id, wait)
                # Polling, jittered: a turn handed over is taken within one interval.
                await asyncio.sleep(min(left, interval * random.uniform(0.5, 1.0)))
                interval = min(interval * 1.5, self.max_poll_interval)
        except BaseException:
            # Timed out or cancelled: leave the line (and the turn, if the last call took it
            # but its reply was lost to the cancellation).
            with contextlib.suppress(Exception):
                await asyncio.shield(self._leave.run(self.client, keys, [held.token]))
            raise

    async def _renew(self, keys: list[str], held: Turn, lease_s: float) -> None:
        lease_ms = str(max(1, round(lease_s * 1000)))
        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                renewed = await self._extend.run(self.client, keys[:1], [held.token, lease_ms])
            except Exception as exc:  # a blip: the next renewal may still make it in time
                log.warning("renewing the turn of %s failed: %s", held.session_id, exc)
                continue
            if not renewed:
                held.lost = True
                return
            held.renewals += 1

    async def holder(self, keys: Sequence[str]) -> str | None:
        """The token of the current holder of the turn on ``keys``, or None."""
        raw = await self.client.get(keys[0])
        return None if raw is None else raw.decode()


class Turns:
    """Fleet-wide turn leases and seen-update markers on one store."""

    def __init__(
        self,
        store: SessionStore,
        *,
        lease: float = 30.0,
        poll_interval: float = 0.005,
        max_poll_interval: float = 0.05,
    ) -> None:
        self.store = store
        self.lock = TurnLock(
            store.client,
            lease=lease,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            scripts=store.scripts,
        )
        self.lease = self.lock.lease
        self._seen = store.scripts.seen_update

    def _keys(self, session_id: str) -> list[str]:
        ident = parse_session_id(session_id)
        keys = self.store.keys
        return [keys.turn(ident), keys.turn_queue(ident), keys.turn_waiters(ident)]

    def turn(
        self, session_id: str, *, timeout: float = 30.0, lease: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[Turn]:
        """Hold the conversation's turn for the body of the ``async with``.

        Waits in arrival order behind other workers up to ``timeout`` seconds, then raises
        TurnBusy. The lease (default: the Turns' ``lease``) is renewed every third of it while
        held; if renewal fails the body keeps running and TurnLost is raised at exit.
        """
        _seconds(timeout, "timeout")
        return self.lock.hold(self._keys(session_id), session_id, timeout=timeout, lease=lease)

    async def holder(self, session_id: str) -> str | None:
        """The token of the current holder of a conversation's turn, or None."""
        return await self.lock.holder(self._keys(session_id))

    async def seen_update(self, platform: object, update_id: object, *, ttl: float) -> bool:
        """True the first time an inbound update id is seen fleet-wide within ``ttl`` seconds,
        False after (a redelivered webhook, a second worker given the same update)."""
        ttl_ms = str(max(1, round(_seconds(ttl, "ttl") * 1000)))
        key = self.store.keys.seen_update(platform, update_id)
        reply = await self._seen.run(self.store.client, [key], [_token(), ttl_ms])
        return bool(reply == 1)
