"""Sync history: every sync operation recorded in a capped list, queried by session or person."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from .keys import KeySchema


@dataclass(frozen=True, slots=True)
class SyncRecord:
    """One sync operation applied to one target session."""

    op: str
    """create, update, delete, merge or resolve."""
    source: str
    target: str
    fields: list[str]
    strategy: str
    result: dict[str, str]
    """field -> applied, kept, conflict or merged."""
    at: float
    person: str | None = None

    def to_json(self) -> str:
        """The record as the history list stores it."""
        return json.dumps(asdict(self), sort_keys=True)


class SyncHistory:
    """The namespace's capped list of SyncRecords (newest first)."""

    def __init__(self, client: Any, keys: KeySchema, cap: int = 10_000) -> None:
        self.client = client
        self.key = keys.sync_history()
        self.cap = cap

    async def record(self, records: list[SyncRecord]) -> None:
        """Append records and trim the list to ``cap``."""
        if not records:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.lpush(self.key, *(r.to_json() for r in records))
            pipe.ltrim(self.key, 0, self.cap - 1)
            await pipe.execute()

    async def query(
        self, session_id: str | None = None, person: str | None = None, limit: int = 100
    ) -> list[SyncRecord]:
        """Newest first; with session_id, records where it is source or target."""
        raw = await self.client.lrange(self.key, 0, self.cap - 1)
        out = []
        for item in raw:
            rec = SyncRecord(**json.loads(item))
            if session_id is not None and session_id not in (rec.source, rec.target):
                continue
            if person is not None and rec.person != person:
                continue
            out.append(rec)
            if len(out) >= limit:
                break
        return out
