"""python-telegram-bot: the updates of one chat handled one at a time across the whole fleet."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

from ..errors import TurnBusy, TurnLost
from ..keys import KeySchema
from ..turns import TurnLock, wait_seconds
from ._records import client_from_url

log = logging.getLogger(__name__)


class SessionTurnProcessor(BaseUpdateProcessor):
    """A PTB update processor on sessioncache's turn lock (turns.TurnLock, as ``system.turn``).

    Updates run concurrently (up to ``max_concurrent_updates`` in this process), except that
    the updates of one chat wait for each other across every worker process, in arrival order::

        processor = SessionTurnProcessor.for_persistence(persistence)
        app = Application.builder().token(TOKEN).persistence(persistence)
              .concurrent_updates(processor).build()

    An update without a chat (an inline query, a poll) runs at once. The holder's lease
    (``lease`` s) is renewed while its handlers run; a crashed worker's chat is taken over when
    its lease ends. ``timeout`` bounds the wait (None: until its turn); an update that waited
    that long is not processed and a warning is logged (``on_busy(update)`` is awaited if
    given). A lease that could not be renewed in time is logged after the handlers.
    """

    __slots__ = ("_on_busy", "_owns_client", "client", "keys", "timeout", "turns")

    def __init__(
        self,
        client: Any,
        max_concurrent_updates: int = 256,
        *,
        namespace: str = "sc",
        timeout: float | None = None,
        lease: float = 30.0,
        on_busy: Any = None,
        owns_client: bool = True,
    ) -> None:
        super().__init__(max_concurrent_updates)
        self.client = client
        self.keys = KeySchema(namespace)
        wait_seconds(timeout)
        self.timeout = timeout
        self.turns = TurnLock(client, lease=lease)
        self._on_busy = on_busy
        self._owns_client = owns_client

    @classmethod
    def from_url(
        cls,
        url: str,
        max_concurrent_updates: int = 256,
        *,
        namespace: str = "sc",
        timeout: float | None = None,
        lease: float = 30.0,
        on_busy: Any = None,
        **connection_options: Any,
    ) -> SessionTurnProcessor:
        """Build on a new client for the URL (any sessioncache URL)."""
        KeySchema(namespace), wait_seconds(timeout), TurnLock(None, lease=lease)
        return cls(
            client_from_url(url, connection_options),
            max_concurrent_updates,
            namespace=namespace,
            timeout=timeout,
            lease=lease,
            on_busy=on_busy,
        )

    @classmethod
    def for_persistence(
        cls, persistence: Any, max_concurrent_updates: int = 256, **options: Any
    ) -> SessionTurnProcessor:
        """On a SessionCachePersistence's client and namespace (closed by the persistence)."""
        return cls(
            persistence.client,
            max_concurrent_updates,
            namespace=persistence.keys.namespace,
            owns_client=False,
            **options,
        )

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        """Run the update's handlers inside its chat's turn (at once if it has no chat)."""
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None:
            await coroutine
            return
        keys = self.keys.ptb_turn(chat.id)
        try:
            async with self.turns.hold(keys, f"telegram chat {chat.id}", timeout=self.timeout):
                await coroutine
        except TurnBusy as busy:
            if inspect.iscoroutine(coroutine):
                coroutine.close()  # never started: no "was never awaited" warning
            log.warning("%s; update %s not processed", busy, getattr(update, "update_id", "?"))
            if self._on_busy is not None:
                await self._on_busy(update)
        except TurnLost as lost:
            # PTB's sequential loop would stop on an exception: the handlers ran, so say so.
            log.warning("%s", lost)

    async def initialize(self) -> None:
        """Nothing to set up: the client connects on first use."""

    async def shutdown(self) -> None:
        """Close the client if this processor created it."""
        if self._owns_client:
            await self.client.aclose()
