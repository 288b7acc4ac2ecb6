"""SessionSystem's methods for context, turns, seen updates and batches (a mixin).

Kept out of system.py so that file stays a thin facade; each method hands over to the
component named in its docstring.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from .batch import Batch, ItemResult
from .coherent import CoherentCache
from .context import DialogueStep, SessionContext
from .history import Message
from .models import Session
from .turns import Turn, Turns


class ConversationMethods:
    """Flat methods of SessionSystem over ``self.context``, ``self.turns`` and ``self.batch``."""

    context: SessionContext
    turns: Turns
    batch: Batch
    near_cache: CoherentCache | None

    async def append_message(
        self, session_id: str, role: str, content: Any, *, tokens: int | None = None, **meta: Any
    ) -> Message:
        """Append to the session's history (SessionContext.append_message)."""
        return await self.context.append_message(session_id, role, content, tokens=tokens, **meta)

    async def get_history(
        self, session_id: str, limit: int | None = None, max_tokens: int | None = None
    ) -> list[Message]:
        """The newest messages, oldest first (SessionContext.get_history)."""
        return await self.context.get_history(session_id, limit, max_tokens)

    async def clear_history(self, session_id: str) -> int:
        """Empty the session's history (SessionContext.clear_history)."""
        return await self.context.clear_history(session_id)

    async def set_variable(self, session_id: str, name: str, value: Any) -> None:
        """Set a context variable, validated first (SessionContext.set_variable)."""
        await self.context.set_variable(session_id, name, value)

    async def set_variables(
        self, session_id: str, values: Mapping[str, Any], *, delete: Iterable[str] = ()
    ) -> None:
        """Set and delete several variables atomically (SessionContext.set_variables)."""
        await self.context.set_variables(session_id, values, delete=delete)

    async def get_variable(self, session_id: str, name: str, default: Any = None) -> Any:
        """One context variable, or ``default`` (SessionContext.get_variable)."""
        return await self.context.get_variable(session_id, name, default)

    async def get_variables(self, session_id: str) -> dict[str, Any]:
        """Every context variable (SessionContext.get_variables)."""
        return await self.context.get_variables(session_id)

    async def delete_variable(self, session_id: str, name: str) -> None:
        """Remove a context variable (SessionContext.delete_variable)."""
        await self.context.delete_variable(session_id, name)

    async def set_slots(
        self, session_id: str, slots: Mapping[str, Any], *, step: str | None = None
    ) -> None:
        """Fill the dialogue step's slots (SessionContext.set_slots)."""
        await self.context.set_slots(session_id, slots, step=step)

    async def get_slots(self, session_id: str) -> DialogueStep:
        """The dialogue step and its slots (SessionContext.get_slots)."""
        return await self.context.get_slots(session_id)

    def turn(
        self, session_id: str, *, timeout: float = 30.0, lease: float | None = None
    ) -> AbstractAsyncContextManager[Turn]:
        """``async with system.turn(sid, timeout=...)``: one worker per conversation at a time,
        fleet-wide; TurnBusy after ``timeout`` seconds of waiting (Turns.turn)."""
        return self.turns.turn(session_id, timeout=timeout, lease=lease)

    async def seen_update(self, platform: object, update_id: object, *, ttl: float) -> bool:
        """True only the first time an inbound update id is seen fleet-wide (Turns.seen_update)."""
        return await self.turns.seen_update(platform, update_id, ttl=ttl)

    async def get_many(self, session_ids: Iterable[str]) -> list[ItemResult[Session]]:
        """Many sessions in pipelined round trips (Batch.get_many)."""
        return await self.batch.get_many(session_ids)

    async def set_many(self, items: Mapping[str, Mapping[str, Any]]) -> list[ItemResult[int]]:
        """Write data fields of many sessions (Batch.set_many)."""
        return await self.batch.set_many(items)

    async def update_many(
        self, updates: Mapping[str, Mapping[str, Any]]
    ) -> list[ItemResult[Session]]:
        """Update many sessions, each with its own arguments (Batch.update_many)."""
        return await self.batch.update_many(updates)

    async def delete_many(self, session_ids: Iterable[str]) -> list[ItemResult[bool]]:
        """Delete many sessions (Batch.delete_many)."""
        return await self.batch.delete_many(session_ids)
