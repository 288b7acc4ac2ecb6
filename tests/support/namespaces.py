"""One fresh key namespace per test, and dropping it afterwards (only its own keys)."""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Any

_ids = itertools.count()


def unique_namespace() -> str:
    """A namespace no other test, process or earlier run uses."""
    return f"t{os.getpid()}x{next(_ids)}x{uuid.uuid4().hex[:6]}"


async def drop_namespace(client: Any, namespace: str) -> None:
    """Delete every key of a test's namespace (and nothing else)."""
    keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
    for key in keys:
        await client.delete(key)
